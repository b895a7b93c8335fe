#![allow(unused_imports, unused_variables)]

use ricochet::{with_retry, RetryConfig};

#[with_retry(
    service_name = "lake",
    retry_on = (std::io::Error,),
    retry_config = RetryConfig { max_attempts: attempts, ..RetryConfig::default() },
)]
async fn fetch(attempts: u32) -> Result<String, std::io::Error> {
    Ok(String::new())
}

struct Client {
    attempts: u32,
}

impl Client {
    #[with_retry(
        service_name = "lake",
        retry_on = (std::io::Error,),
        retry_config = RetryConfig { max_attempts: self.attempts, ..RetryConfig::default() },
    )]
    async fn get(&self) -> Result<String, std::io::Error> {
        Ok(String::new())
    }
}

trait Attempts {
    const N: u32;
}

#[with_retry(
    service_name = "lake",
    retry_on = (std::io::Error,),
    retry_config = RetryConfig { max_attempts: A::N, ..RetryConfig::default() },
)]
async fn generic<A: Attempts>() -> Result<String, std::io::Error> {
    Ok(String::new())
}

fn main() {}
