//! Platform Admin and the finance backend served in-process beside the
//! [`Platform`] of `services/module/tests/platform/`: together, every
//! service the platform's smoke checks talk to.
//!
//! Used by `services/admin/tests/admin.rs` and (through a `#[path]`) by
//! kisumctl's own smoke tests; both declare the `platform` module next to
//! this one.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use kisum_common::config::Vars;
use reqwest::StatusCode;
use tokio::sync::oneshot;

use kisum_module::Module;

use super::platform::{
    ADMIN_SECRET, AUDIENCE, ISSUER, KISUMCTL_SECRET, Platform, database, eventually,
    loopback_listeners, module_vars, serve_until_dropped,
};

/// Platform Admin's settings: its database, Auth's public and internal
/// URLs, Core's internal URL.
pub fn admin_vars(database_url: &str, auth: &str, auth_internal: &str, core: &str) -> Vars {
    Vars::from_pairs([
        ("SERVICE_NAME", "platform-admin".to_string()),
        ("KISUM_ENVIRONMENT", "test".into()),
        ("HTTP_PORT", "0".into()),
        ("INTERNAL_PORT", "0".into()),
        ("ADMIN_DB_URL", database_url.into()),
        ("AUTH_URL", auth.into()),
        ("AUTH_INTERNAL_URL", auth_internal.into()),
        ("CORE_INTERNAL_URL", core.into()),
        ("JWT_ISSUER", ISSUER.into()),
        ("JWT_AUDIENCE", AUDIENCE.into()),
        ("JWKS_URL", format!("{auth}/.well-known/jwks.json")),
        ("INTERNAL_CREDENTIAL", ADMIN_SECRET.into()),
        ("INTERNAL_CALLER_KISUMCTL", KISUMCTL_SECRET.into()),
    ])
}

/// Platform Admin, serving.
pub struct Admin {
    /// The public port (the admin API).
    pub address: SocketAddr,
    /// platform_admin_db.
    pub pool: sqlx::PgPool,
    pub stop: oneshot::Sender<()>,
}

/// Platform Admin on a migrated database of its own, calling Auth's
/// internal routes at `auth_internal` and Core at `core` (the platform's
/// own, or something in front of them).
pub async fn start_admin(
    prefix: &str,
    platform: &Platform,
    auth_internal: &str,
    core: &str,
) -> Admin {
    let url = database(&format!("{prefix}_admin")).await;
    let vars = admin_vars(&url, &platform.auth_url(), auth_internal, core);
    let config = kisum_admin::Config::from_vars(&vars).unwrap();
    kisum_admin::migrate(&config).await.unwrap();
    let pool = kisum_admin::pool(&config).unwrap();
    let listeners = loopback_listeners().await;
    let (address, _) = listeners.addresses().unwrap();
    let stop = serve_until_dropped(|shutdown| async move {
        kisum_admin::run(config, listeners, shutdown).await.unwrap();
    });
    Admin {
        address,
        pool,
        stop,
    }
}

/// The finance backend (`kisum-module`) on its own database, against the
/// platform's Auth, caching access contexts for `access_cache`; answers
/// once it is ready.
pub async fn start_finance(
    platform: &Platform,
    access_cache: Duration,
) -> (SocketAddr, oneshot::Sender<()>) {
    let database_url = database("smoke_finance").await;
    let mut vars = module_vars(Module::Finance, platform, &database_url);
    vars.set("ACCESS_CACHE_SECONDS", access_cache.as_secs().to_string());
    let config = kisum_module::Config::from_vars(&vars).unwrap();
    kisum_module::migrate(Module::Finance, &database_url)
        .await
        .unwrap();
    let listeners = loopback_listeners().await;
    let (public, _) = listeners.addresses().unwrap();
    let stop = serve_until_dropped(|shutdown| async move {
        kisum_module::run(config, listeners, shutdown)
            .await
            .unwrap();
    });
    let http = reqwest::Client::new();
    let ready = eventually(Duration::from_secs(20), || async {
        let ready = http.get(format!("http://{public}/ready")).send().await;
        ready.is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
    assert!(ready, "the finance backend never became ready");
    (public, stop)
}
