//! `kisum-admin [serve | migrate]`: Platform Admin on HTTP_PORT and INTERNAL_PORT
//! until SIGTERM, or the platform_admin_db migrations.

use std::process::ExitCode;

use kisum_admin::Config;
use kisum_common::command::{self, Service, until_shutdown};

#[tokio::main]
async fn main() -> ExitCode {
    command::main(Service {
        binary: "kisum-admin",
        database: "platform_admin_db",
        load: Config::from_vars,
        migrate: |config: Config| async move { kisum_admin::migrate(&config).await },
        check_schema: |config: &Config| {
            let config = config.clone();
            async move { kisum_admin::check_schema(&config).await }
        },
        run: |config, listeners| kisum_admin::run(config, listeners, until_shutdown()),
        ports: |config: &Config| config.common.ports(),
    })
    .await
}
