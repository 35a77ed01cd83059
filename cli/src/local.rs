//! `kinesis local`: the Kinesis and DynamoDB stand-ins embedded in this process, on 127.0.0.1,
//! until Ctrl-C or SIGTERM.

use std::net::{Ipv4Addr, SocketAddr};

use kinesis_examples::{ensure_stream, local_config, start_dynamodb, start_kinesis};

use crate::error::CliError;

/// Start local Kinesis and DynamoDB stand-ins and print the environment that points the AWS SDKs,
/// the AWS CLI and this tool at them.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The Kinesis stand-in's port (0: any free port).
    #[arg(long, default_value_t = 4567, value_name = "PORT")]
    kinesis_port: u16,
    /// The DynamoDB stand-in's port (0: any free port).
    #[arg(long, default_value_t = 8000, value_name = "PORT")]
    dynamodb_port: u16,
    /// Streams to create once started, as NAME or NAME:SHARDS (1 shard by default); repeatable.
    #[arg(long = "create-stream", value_name = "NAME[:SHARDS]", value_parser = parse_stream)]
    create_streams: Vec<(String, i32)>,
}

/// `NAME` or `NAME:SHARDS`, with 1 to 100 shards (the stand-in's limit here).
fn parse_stream(text: &str) -> Result<(String, i32), String> {
    let (name, shards) = match text.rsplit_once(':') {
        Some((name, shards)) => {
            let shards: i32 = shards
                .parse()
                .map_err(|_| format!("{shards:?} is not a shard count"))?;
            (name, shards)
        }
        None => (text, 1),
    };
    if name.is_empty() {
        return Err("the stream name is empty".to_owned());
    }
    if !(1..=100).contains(&shards) {
        return Err(format!("{shards} shards: between 1 and 100"));
    }
    Ok((name.to_owned(), shards))
}

async fn bind(port: u16, what: &str) -> Result<tokio::net::TcpListener, CliError> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| CliError::io(&format!("binding the {what} stand-in to {addr}"), &e))
}

pub(crate) async fn run(args: Args) -> Result<(), CliError> {
    let kinesis_listener = bind(args.kinesis_port, "Kinesis").await?;
    let dynamodb_listener = bind(args.dynamodb_port, "DynamoDB").await?;
    let kinesis = start_kinesis(kinesis_listener)
        .await
        .map_err(|e| CliError::Io(format!("starting the Kinesis stand-in: {e}")))?;
    let dynamodb = start_dynamodb(dynamodb_listener)
        .await
        .map_err(|e| CliError::Io(format!("starting the DynamoDB stand-in: {e}")))?;
    let client = aws_sdk_kinesis::Client::new(&local_config(kinesis.clone()).await);
    for (name, shards) in &args.create_streams {
        ensure_stream(&client, name, *shards)
            .await
            .map_err(|e| CliError::Aws(format!("creating stream {name}: {e}")))?;
        eprintln!("# stream {name} with {shards} shard(s) is ACTIVE");
    }
    // The environment first, on stdout (`eval "$(kinesis local)"` is not possible, as the command
    // keeps running; copy the lines to another shell).
    println!("export AWS_ENDPOINT_URL_KINESIS={kinesis}");
    println!("export AWS_ENDPOINT_URL_DYNAMODB={dynamodb}");
    println!("export AWS_REGION=us-east-1");
    println!("export AWS_ACCESS_KEY_ID=local");
    println!("export AWS_SECRET_ACCESS_KEY=local");
    eprintln!(
        "# Kinesis at {kinesis}, DynamoDB at {dynamodb}, in memory; Ctrl-C stops them (and loses \
         their data)"
    );
    stopped().await?;
    eprintln!("# stopped");
    Ok(())
}

/// Waits for Ctrl-C (SIGINT) or SIGTERM.
async fn stopped() -> Result<(), CliError> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| CliError::io("listening for SIGTERM", &e))?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.map_err(|e| CliError::io("listening for Ctrl-C", &e)),
        _ = term.recv() => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_specs() {
        assert_eq!(parse_stream("s"), Ok(("s".to_owned(), 1)));
        assert_eq!(parse_stream("s:4"), Ok(("s".to_owned(), 4)));
        assert_eq!(parse_stream("a:b:2"), Ok(("a:b".to_owned(), 2)));
        assert!(parse_stream("s:0").is_err());
        assert!(parse_stream("s:101").is_err());
        assert!(parse_stream("s:x").is_err());
        assert!(parse_stream(":3").is_err());
    }
}
