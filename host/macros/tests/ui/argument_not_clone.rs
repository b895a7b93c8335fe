use ricochet::with_retry;

struct Payload {
    bytes: Vec<u8>,
}

#[with_retry(service_name = "lake", retry_on = (std::io::Error,))]
async fn upload(payload: Payload) -> Result<usize, std::io::Error> {
    Ok(payload.bytes.len())
}

fn main() {}
