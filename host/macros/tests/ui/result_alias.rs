use ricochet::with_retry;

#[with_retry(service_name = "lake")]
async fn fetch() -> std::io::Result<String> {
    Ok(String::new())
}

fn main() {}
