//! `kisum-core [serve | migrate]`: Platform Core on HTTP_PORT and INTERNAL_PORT
//! until SIGTERM, or the platform_core_db migrations.

use std::process::ExitCode;

use kisum_common::command::{self, Service, until_shutdown};
use kisum_core::Config;

#[tokio::main]
async fn main() -> ExitCode {
    command::main(Service {
        binary: "kisum-core",
        database: "platform_core_db",
        load: Config::from_vars,
        migrate: |config: Config| async move { kisum_core::migrate(&config).await },
        check_schema: |config: &Config| {
            let config = config.clone();
            async move { kisum_core::check_schema(&config).await }
        },
        run: |config, listeners| kisum_core::run(config, listeners, until_shutdown()),
        ports: |config: &Config| config.common.ports(),
    })
    .await
}
