//! Deletes the JetStream streams the test suites create (names `T<uuid>_<PRODUCER>`), so
//! repeated `make test-nats` runs do not pile them up on the NATS server.

use futures::StreamExt;

#[tokio::main]
async fn main() -> Result<(), async_nats::Error> {
    let url =
        std::env::var("BOOKMESH_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let js = async_nats::jetstream::new(async_nats::connect(url.as_str()).await?);
    let mut names = js.stream_names();
    let mut doomed = Vec::new();
    while let Some(name) = names.next().await {
        let name = name?;
        // Test prefixes are "t" + a UUIDv7 without dashes: 33 characters, then "_".
        let is_test = name.starts_with('T')
            && name.split_once('_').is_some_and(|(prefix, _)| {
                prefix.len() == 33 && prefix[1..].chars().all(|c| c.is_ascii_hexdigit())
            });
        if is_test {
            doomed.push(name);
        }
    }
    for name in &doomed {
        js.delete_stream(name).await?;
    }
    println!("dropped {} test streams", doomed.len());
    Ok(())
}
