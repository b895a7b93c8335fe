use ricochet::with_retry;

#[with_retry(service_name = "lake", service_name = "sea")]
async fn fetch() -> Result<String, std::io::Error> {
    Ok(String::new())
}

fn main() {}
