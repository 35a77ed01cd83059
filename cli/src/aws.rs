//! The standard AWS configuration (environment, shared config and credentials files, profiles),
//! with `--region`, `--profile` and `--endpoint-url` on top, and credentials resolved before any
//! call so that missing credentials are one clear error.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::ProvideCredentials;

use crate::error::CliError;

/// Where and as whom to call AWS.
#[derive(clap::Args, Debug, Clone, Default)]
pub(crate) struct AwsArgs {
    /// The AWS region (default: AWS_REGION, or the profile's region).
    #[arg(long, global = true, value_name = "REGION")]
    pub(crate) region: Option<String>,
    /// The profile of the shared config and credentials files (default: AWS_PROFILE, or
    /// "default").
    #[arg(long, global = true, value_name = "NAME")]
    pub(crate) profile: Option<String>,
    /// One endpoint for both Kinesis and DynamoDB, for example a local stand-in (default: the
    /// SDK's, which honours AWS_ENDPOINT_URL_KINESIS, AWS_ENDPOINT_URL_DYNAMODB and
    /// AWS_ENDPOINT_URL).
    #[arg(long, global = true, value_name = "URL")]
    pub(crate) endpoint_url: Option<String>,
}

impl AwsArgs {
    /// The SDK configuration, with a region and working credentials, or a typed error saying what
    /// is missing.
    pub(crate) async fn load(&self) -> Result<SdkConfig, CliError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = &self.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(profile) = &self.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(url) = &self.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let config = loader.load().await;
        if config.region().is_none() {
            return Err(CliError::Usage(
                "no AWS region: pass --region, or set AWS_REGION or a region in the profile"
                    .to_owned(),
            ));
        }
        let Some(provider) = config.credentials_provider() else {
            return Err(CliError::Access("no AWS credentials provider".to_owned()));
        };
        if let Err(err) = provider.provide_credentials().await {
            return Err(CliError::Access(format!(
                "no AWS credentials ({err}): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
                 or AWS_PROFILE, or pass --profile"
            )));
        }
        Ok(config)
    }

    /// A Kinesis client.
    pub(crate) async fn kinesis(&self) -> Result<aws_sdk_kinesis::Client, CliError> {
        Ok(aws_sdk_kinesis::Client::new(&self.load().await?))
    }

    /// A DynamoDB client.
    pub(crate) async fn dynamodb(&self) -> Result<aws_sdk_dynamodb::Client, CliError> {
        Ok(aws_sdk_dynamodb::Client::new(&self.load().await?))
    }

    /// A Kinesis and a DynamoDB client of one configuration.
    pub(crate) async fn both(
        &self,
    ) -> Result<(aws_sdk_kinesis::Client, aws_sdk_dynamodb::Client), CliError> {
        let config = self.load().await?;
        Ok((
            aws_sdk_kinesis::Client::new(&config),
            aws_sdk_dynamodb::Client::new(&config),
        ))
    }
}
