//! What both benchmarks need to find the local RabbitMQ cluster.

/// The cluster's node URLs (SETTLE_TEST_CLUSTER_AMQP_URLS from `scripts/services.sh env`, or
/// BENCH_CLUSTER_URLS), when its first node answers; `None` skips the cluster phase.
pub fn cluster_urls() -> Option<Vec<String>> {
    let urls = std::env::var("BENCH_CLUSTER_URLS")
        .or_else(|_| std::env::var("SETTLE_TEST_CLUSTER_AMQP_URLS"))
        .ok()?;
    let urls: Vec<String> = urls.split(',').map(str::to_owned).collect();
    let first = urls.first()?.parse::<lapin::uri::AMQPUri>().ok()?;
    std::net::TcpStream::connect((first.authority.host.as_str(), first.authority.port)).ok()?;
    Some(urls)
}
