use std::sync::Arc;

use ricochet::with_retry;

struct Client;

impl Client {
    #[with_retry(service_name = "lake")]
    async fn fetch(self: Arc<Self>) -> Result<u32, std::io::Error> {
        Ok(1)
    }
}

fn main() {}
