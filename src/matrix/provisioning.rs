//! Shapes of the fields `kisumctl dns` and `kisumctl tls` read from an
//! environment file: endpoints, hosted zone ids, record targets, the ACME
//! overrides and the HTTP-01 listener. Each problem is an input error
//! (exit 2) at its file, line and field.

use super::load::{InputError, Loaded, Source, suggest};
use super::schema::{AcmeChallenge, EnvironmentFile, TlsMode};
use super::syntax::is_host_name;

/// A Route53 hosted zone id (`Z` and up to 31 more capitals or digits).
pub fn is_hosted_zone_id(text: &str) -> bool {
    (2..=32).contains(&text.len())
        && text
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// An http(s) URL without spaces or credentials.
fn is_http_url(text: &str, https_only: bool) -> bool {
    let rest = match text.strip_prefix("https://") {
        Some(rest) => rest,
        None if https_only => return false,
        None => match text.strip_prefix("http://") {
            Some(rest) => rest,
            None => return false,
        },
    };
    let authority = rest.split('/').next().unwrap_or_default();
    !authority.is_empty()
        && !authority.contains('@')
        && !text.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// The challenge an environment uses: its own or the policy's.
pub fn challenge(loaded_policy: AcmeChallenge, file: &EnvironmentFile) -> AcmeChallenge {
    file.tls.challenge.unwrap_or(loaded_policy)
}

pub(super) fn check(loaded: &Loaded) -> Vec<InputError> {
    let zones: Vec<&str> = loaded.base.dns.zones.keys().map(String::as_str).collect();
    let mut errors = Vec::new();
    for (file, source) in loaded.environments.values() {
        let mut bad = |field: &str, message: String, hint: Option<String>| {
            errors.push(at(source, field, message, hint));
        };
        let dns = &file.dns;
        if let Some(endpoint) = &dns.endpoint
            && !is_http_url(endpoint, false)
        {
            let hint = Some("like http://127.0.0.1:5000".to_string());
            bad(
                "dns.endpoint",
                format!("`{endpoint}` is not an http(s) URL"),
                hint,
            );
        }
        for (zone, id) in &dns.hosted_zones {
            let field = format!("dns.hosted-zones.{zone}");
            if !zones.contains(&zone.as_str()) {
                let hint = suggest(zone, &zones).map(|best| format!("did you mean `{best}`?"));
                bad(&field, format!("unknown zone `{zone}`"), hint);
            } else if !is_hosted_zone_id(id) {
                let hint = Some("like Z0123456789ABCDEFGHIJ".to_string());
                bad(
                    &field,
                    format!("`{id}` is not a Route53 hosted zone id"),
                    hint,
                );
            }
        }
        if let Some(alias) = &dns.ingress_alias
            && !is_hosted_zone_id(&alias.hosted_zone_id)
        {
            let message = format!("`{}` is not a Route53 hosted zone id", alias.hosted_zone_id);
            bad("dns.ingress-alias.hosted-zone-id", message, None);
        }
        for (n, address) in dns.ingress_addresses.iter().enumerate() {
            if address.parse::<std::net::IpAddr>().is_err() {
                let message = format!("`{address}` is not an IPv4 or IPv6 address");
                bad(&format!("dns.ingress-addresses.{n}"), message, None);
            }
        }
        if dns.ingress_alias.is_some() && !dns.ingress_addresses.is_empty() {
            let message = "an alias and fixed addresses cannot both be the ingress records".into();
            let hint = Some("keep `ingress-alias` or `ingress-addresses`".to_string());
            bad("dns.ingress-addresses", message, hint);
        }
        let targets = [
            ("dns.ingress-target", Some(&dns.ingress_target)),
            ("dns.frontend-target", dns.frontend_target.as_ref()),
            ("dns.internal-target", dns.internal_target.as_ref()),
        ];
        for (field, target) in targets {
            let Some(target) = target else { continue };
            // Only a managed environment writes the ingress target anywhere.
            let unused = field == "dns.ingress-target"
                && (!dns.managed || !dns.ingress_addresses.is_empty());
            if !unused && !is_host_name(target) {
                let hint = Some("lowercase ASCII labels separated by dots".to_string());
                bad(field, format!("`{target}` is not a host name"), hint);
            }
        }

        let tls = &file.tls;
        if let Some(url) = &tls.acme_directory
            && !is_http_url(url, true)
        {
            let message = format!("`{url}` is not an https URL (ACME requires https)");
            bad("tls.acme-directory", message, None);
        }
        if tls.acme_ca_root.as_deref().is_some_and(str::is_empty) {
            bad("tls.acme-ca-root", "is empty".into(), None);
        }
        if let Some(listen) = &tls.http01_listen
            && listen.parse::<std::net::SocketAddr>().is_err()
        {
            let hint = Some("like 0.0.0.0:80 or 127.0.0.1:5002".to_string());
            bad(
                "tls.http01-listen",
                format!("`{listen}` is not an address and port"),
                hint,
            );
        }
        let http01 = challenge(loaded.base.tls.challenge, file) == AcmeChallenge::Http01;
        if http01 && tls.mode == TlsMode::Acme && tls.http01_listen.is_none() {
            let message = "missing: the challenge here is http-01, and kisumctl needs an \
                           address to serve its tokens on"
                .into();
            let hint = Some("add `http01-listen: 0.0.0.0:80` under `tls`".to_string());
            bad("tls.http01-listen", message, hint);
        }
    }
    errors
}

fn at(source: &Source, field: &str, message: String, hint: Option<String>) -> InputError {
    InputError {
        file: source.path.clone(),
        position: source.locate(field),
        field: field.to_string(),
        message,
        hint,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosted_zone_ids_and_urls_have_their_shapes() {
        assert!(is_hosted_zone_id("Z2FDTNDATAQYW2"));
        assert!(!is_hosted_zone_id("z2fd"));
        assert!(!is_hosted_zone_id("/hostedzone/Z2FD"));
        assert!(is_http_url("http://127.0.0.1:5000", false));
        assert!(!is_http_url("http://127.0.0.1:5000", true));
        assert!(is_http_url("https://acme.example/dir", true));
        assert!(!is_http_url("https://user:pw@acme.example/dir", true));
        assert!(!is_http_url("ftp://x", false));
        assert!(!is_http_url("https://", true));
    }
}
