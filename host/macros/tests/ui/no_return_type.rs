use ricochet::with_retry;

#[with_retry(service_name = "lake")]
async fn fetch() {}

fn main() {}
