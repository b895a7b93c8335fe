use ricochet::with_retry;

#[with_retry(service_name = "lake")]
async fn fill(buffer: &mut Vec<u8>) -> Result<usize, std::io::Error> {
    buffer.push(1);
    Ok(buffer.len())
}

fn main() {}
