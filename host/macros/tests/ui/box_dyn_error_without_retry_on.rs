use ricochet::with_retry;

#[with_retry(service_name = "lake")]
async fn fetch() -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    Ok(String::new())
}

fn main() {}
