use ricochet::with_retry;

#[with_retry(service_name = "lake")]
fn fetch() -> Result<String, std::io::Error> {
    Ok(String::new())
}

fn main() {}
