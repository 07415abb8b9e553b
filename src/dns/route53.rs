//! Route53 through the AWS SDK: zones found by domain, record sets read
//! page by page, change batches sent and waited for until INSYNC.
//!
//! Credentials come from the SDK's standard chain (environment, profile,
//! web identity, instance role). The endpoint is AWS's unless the matrix
//! (`dns.endpoint`) or the SDK's own variables (`AWS_ENDPOINT_URL_ROUTE_53`,
//! `AWS_ENDPOINT_URL`) name another. Throttling (`Throttling`,
//! `PriorRequestNotComplete`) and transient errors are retried by the SDK's
//! standard strategy with exponential backoff and jitter, up to
//! `AWS_MAX_ATTEMPTS` attempts (default 8).

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use aws_sdk_route53::error::ProvideErrorMetadata;
use aws_sdk_route53::types::{
    AliasTarget, Change as SdkChange, ChangeAction as SdkAction, ChangeBatch, ChangeStatus,
    ResourceRecord, ResourceRecordSet, RrType,
};

use super::plan::{Change, ChangeAction, Listing};
use super::records::{Alias, RecordSet, RecordType, normal_name};

pub struct Route53 {
    client: aws_sdk_route53::Client,
    /// Where it is, for error messages.
    service: crate::aws::Service,
}

/// Why a change batch failed.
#[derive(Debug)]
pub enum ChangeError {
    /// Route53 refused the batch as a whole (a record that exists, a delete
    /// that does not match): nothing of it was applied.
    Refused(String),
    /// Anything else: throttling past every retry, the network, access.
    Other(anyhow::Error),
}

impl Route53 {
    pub async fn connect(endpoint: Option<&str>) -> Route53 {
        use aws_config::meta::region::RegionProviderChain;
        use aws_config::timeout::TimeoutConfig;
        use aws_config::{BehaviorVersion, Region};

        let (attempts, retry) = crate::aws::retry_policy();
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(10))
            .operation_attempt_timeout(Duration::from_secs(60))
            .build();
        // Route53 is global: its API signs for us-east-1 whatever the region.
        let region = RegionProviderChain::default_provider().or_else(Region::new("us-east-1"));
        let shared = aws_config::defaults(BehaviorVersion::latest())
            .region(region)
            .retry_config(retry)
            .timeout_config(timeouts)
            .load()
            .await;
        let mut config = aws_sdk_route53::config::Builder::from(&shared);
        if let Some(endpoint) = endpoint {
            config = config.endpoint_url(endpoint);
        }
        Route53 {
            client: aws_sdk_route53::Client::from_conf(config.build()),
            service: crate::aws::Service::new("Route53", "ROUTE_53", endpoint)
                .with_attempts(attempts),
        }
    }

    /// The hosted zone of `domain` that is private or public as asked;
    /// `None` when there is none.
    pub async fn find_zone(&self, domain: &str, private: bool) -> Result<Option<String>> {
        let wanted = format!("{domain}.");
        let mut found = Vec::new();
        let mut next: Option<(String, Option<String>)> = None;
        loop {
            let mut request = self.client.list_hosted_zones_by_name();
            request = match &next {
                Some((name, id)) => request.dns_name(name).set_hosted_zone_id(id.clone()),
                None => request.dns_name(&wanted),
            };
            let page = request
                .send()
                .await
                .map_err(|e| self.service.error("listing hosted zones", e))?;
            let mut past = false;
            for zone in page.hosted_zones() {
                if zone.name() != wanted {
                    past = true;
                    continue;
                }
                let is_private = zone.config().is_some_and(|c| c.private_zone());
                if is_private == private {
                    found.push(zone.id().trim_start_matches("/hostedzone/").to_string());
                }
            }
            match (page.is_truncated(), page.next_dns_name()) {
                (true, Some(name)) if !past => {
                    next = Some((
                        name.to_string(),
                        page.next_hosted_zone_id().map(str::to_string),
                    ));
                }
                _ => break,
            }
        }
        let kind = if private { "private" } else { "public" };
        match found.as_slice() {
            [id] => Ok(Some(id.clone())),
            [] => Ok(None),
            many => bail!(
                "Route53 has {} {kind} hosted zones {domain} ({}); name one under dns.hosted-zones",
                many.len(),
                many.join(", ")
            ),
        }
    }

    /// Every record set of a zone, page after page.
    pub async fn list(&self, zone_id: &str) -> Result<Listing> {
        let mut listing = Listing::default();
        let mut start: Option<(String, RrType, Option<String>)> = None;
        loop {
            let mut request = self
                .client
                .list_resource_record_sets()
                .hosted_zone_id(zone_id);
            if let Some((name, rtype, id)) = start.take() {
                request = request
                    .start_record_name(name)
                    .start_record_type(rtype)
                    .set_start_record_identifier(id);
            }
            let page = request.send().await.map_err(|e| {
                self.service
                    .error(&format!("listing the records of zone {zone_id}"), e)
            })?;
            for set in page.resource_record_sets() {
                let name = normal_name(set.name());
                match known(set) {
                    Some(record) => listing.sets.push(record),
                    None => listing
                        .others
                        .push((name, set.r#type().as_str().to_string())),
                }
            }
            if !page.is_truncated() {
                break;
            }
            let (Some(name), Some(rtype)) = (page.next_record_name(), page.next_record_type())
            else {
                break;
            };
            start = Some((
                name.to_string(),
                rtype.clone(),
                page.next_record_identifier().map(str::to_string),
            ));
        }
        Ok(listing)
    }

    /// The record set (`name`, `rtype`) of a zone, if there is one.
    pub async fn get(
        &self,
        zone_id: &str,
        name: &str,
        rtype: RecordType,
    ) -> Result<Option<RecordSet>> {
        let page = self
            .client
            .list_resource_record_sets()
            .hosted_zone_id(zone_id)
            .start_record_name(name)
            .start_record_type(RrType::from(rtype.as_str()))
            .max_items(1)
            .send()
            .await
            .map_err(|e| {
                self.service
                    .error(&format!("reading {name} in zone {zone_id}"), e)
            })?;
        Ok(page
            .resource_record_sets()
            .iter()
            .filter_map(known)
            .find(|set| set.name == name && set.rtype == rtype))
    }

    /// Sends one change batch; the id of the change on success.
    pub async fn change(
        &self,
        zone_id: &str,
        changes: &[&Change],
        comment: &str,
    ) -> Result<String, ChangeError> {
        let sdk_changes = changes
            .iter()
            .map(|c| to_sdk(c))
            .collect::<Result<Vec<_>>>()
            .map_err(ChangeError::Other)?;
        let batch = ChangeBatch::builder()
            .comment(comment)
            .set_changes(Some(sdk_changes))
            .build()
            .map_err(|e| ChangeError::Other(e.into()))?;
        let result = self
            .client
            .change_resource_record_sets()
            .hosted_zone_id(zone_id)
            .change_batch(batch)
            .send()
            .await;
        match result {
            Ok(output) => Ok(output
                .change_info()
                .map(|info| info.id().to_string())
                .unwrap_or_default()),
            Err(error) => {
                let code = error.code().unwrap_or_default().to_string();
                if matches!(code.as_str(), "InvalidChangeBatch" | "InvalidInput") {
                    let message = error.message().unwrap_or(&code).to_string();
                    Err(ChangeError::Refused(message))
                } else {
                    let what = format!("changing the records of zone {zone_id}");
                    Err(ChangeError::Other(self.service.error(&what, error)))
                }
            }
        }
    }

    /// Waits until change `id` is INSYNC (every Route53 name server has
    /// it), polling with a growing delay up to `timeout`.
    pub async fn wait_insync(&self, id: &str, timeout: Duration) -> Result<()> {
        if id.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        let mut delay = Duration::from_millis(500);
        loop {
            let change = self
                .client
                .get_change()
                .id(id)
                .send()
                .await
                .map_err(|e| self.service.error(&format!("reading change {id}"), e))?;
            let status = change.change_info().map(|i| i.status());
            if status == Some(&ChangeStatus::Insync) {
                return Ok(());
            }
            if Instant::now() + delay > deadline {
                bail!(
                    "change {id} is still {} after {} s (--wait-timeout): Route53 accepted it, \
                     but not every one of its name servers serves it yet; run `dns apply` again \
                     (it changes nothing and waits again) or wait longer",
                    status.map_or("without a status", |s| s.as_str()),
                    timeout.as_secs()
                );
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }
}

/// A record set kisumctl reads, or `None` for the kinds it leaves alone
/// (other types, routing policies with set identifiers).
fn known(set: &ResourceRecordSet) -> Option<RecordSet> {
    let rtype = RecordType::parse(set.r#type().as_str())?;
    if set.set_identifier().is_some() {
        return None;
    }
    let alias = set.alias_target().map(|a| Alias {
        hosted_zone_id: a.hosted_zone_id().to_string(),
        dns_name: normal_name(a.dns_name()),
        evaluate_target_health: a.evaluate_target_health(),
    });
    let mut values: Vec<String> = set
        .resource_records()
        .iter()
        .map(|r| match rtype {
            RecordType::Cname => normal_name(r.value()),
            _ => r.value().to_string(),
        })
        .collect();
    values.sort();
    Some(RecordSet {
        name: normal_name(set.name()),
        rtype,
        ttl: set.ttl().and_then(|t| u32::try_from(t).ok()),
        values,
        alias,
    })
}

fn to_sdk(change: &Change) -> Result<SdkChange> {
    let set = &change.set;
    let mut builder = ResourceRecordSet::builder()
        .name(&set.name)
        .r#type(RrType::from(set.rtype.as_str()));
    if let Some(ttl) = set.ttl {
        builder = builder.ttl(i64::from(ttl));
    }
    for value in &set.values {
        builder = builder.resource_records(ResourceRecord::builder().value(value).build()?);
    }
    if let Some(alias) = &set.alias {
        builder = builder.alias_target(
            AliasTarget::builder()
                .hosted_zone_id(&alias.hosted_zone_id)
                .dns_name(&alias.dns_name)
                .evaluate_target_health(alias.evaluate_target_health)
                .build()?,
        );
    }
    let action = match change.action {
        ChangeAction::Create => SdkAction::Create,
        ChangeAction::Upsert => SdkAction::Upsert,
        ChangeAction::Delete => SdkAction::Delete,
    };
    Ok(SdkChange::builder()
        .action(action)
        .resource_record_set(builder.build()?)
        .build()?)
}
