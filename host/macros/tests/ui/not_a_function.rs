use ricochet::with_retry;

#[with_retry(service_name = "lake")]
struct Client {
    url: String,
}

fn main() {}
