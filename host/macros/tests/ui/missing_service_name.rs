use ricochet::with_retry;

#[with_retry(retry_on = (std::io::Error,))]
async fn fetch() -> Result<String, std::io::Error> {
    Ok(String::new())
}

fn main() {}
