use ricochet::with_retry;

const SERVICE: &str = "lake";

#[with_retry(service_name = SERVICE)]
async fn fetch() -> Result<String, std::io::Error> {
    Ok(String::new())
}

fn main() {}
