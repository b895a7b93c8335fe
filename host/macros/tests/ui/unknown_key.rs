use ricochet::with_retry;

#[with_retry(service_name = "lake", max_attempts = 3)]
async fn fetch() -> Result<String, std::io::Error> {
    Ok(String::new())
}

fn main() {}
