use ricochet::with_retry;

struct Client {
    calls: u32,
}

impl Client {
    #[with_retry(service_name = "lake")]
    async fn fetch(&mut self) -> Result<u32, std::io::Error> {
        self.calls += 1;
        Ok(self.calls)
    }
}

fn main() {}
