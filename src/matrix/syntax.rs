//! The shapes a value must have before it can reach a manifest: host
//! names, Kubernetes names, variable names, image references, networks.
//! A value of the wrong shape is unusable input, whatever its policy.

use std::net::Ipv4Addr;

/// An RFC 1123 label: lowercase letters, digits and `-`, 1 to 63 long,
/// not starting or ending with `-`.
pub fn is_dns_label(text: &str) -> bool {
    let bytes = text.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// A lowercase host name of at least two labels, no trailing dot.
pub fn is_host_name(text: &str) -> bool {
    text.len() <= 253 && text.split('.').count() >= 2 && text.split('.').all(is_dns_label)
}

/// A POSIX environment variable name.
pub fn is_variable_name(text: &str) -> bool {
    let mut chars = text.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A key inside a Kubernetes Secret, also used as a file name.
pub fn is_secret_key(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text != "."
        && !text.starts_with("..")
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// An image tag, or `sha256:` and 64 hex digits.
pub fn is_image_tag(text: &str) -> bool {
    if let Some(digest) = text.strip_prefix("sha256:") {
        return digest.len() == 64 && digest.chars().all(|c| c.is_ascii_hexdigit());
    }
    let mut chars = text.chars();
    text.len() <= 128
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// A registry host (with optional port) followed by lowercase path parts.
pub fn is_image_registry(text: &str) -> bool {
    let mut parts = text.split('/');
    let Some(host) = parts.next() else {
        return false;
    };
    let host_only = host.split_once(':').map_or(host, |(name, port)| {
        if port.chars().all(|c| c.is_ascii_digit()) && !port.is_empty() {
            name
        } else {
            ""
        }
    });
    is_host_name(host_only) && parts.all(is_image_path_part)
}

/// One part of an image repository path.
pub fn is_image_path_part(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
        && text
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && text
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric())
}

/// An IPv4 network `a.b.c.d/n` whose address has no bits past the prefix.
pub fn parse_cidr(text: &str) -> Option<(Ipv4Addr, u8)> {
    let (address, prefix) = text.split_once('/')?;
    let address: Ipv4Addr = address.parse().ok()?;
    let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    (u32::from(address) & !mask == 0).then_some((address, prefix))
}

/// Whether a network lies inside loopback or a private range.
pub fn is_private_network(text: &str) -> bool {
    let Some((address, prefix)) = parse_cidr(text) else {
        return false;
    };
    let inside = |base: [u8; 4], bits: u8| {
        let mask = u32::MAX << (32 - bits);
        prefix >= bits && u32::from(address) & mask == u32::from(Ipv4Addr::from(base))
    };
    inside([10, 0, 0, 0], 8)
        || inside([172, 16, 0, 0], 12)
        || inside([192, 168, 0, 0], 16)
        || inside([127, 0, 0, 0], 8)
}

/// An nginx size: digits with an optional `k`, `m` or `g`.
pub fn is_body_size(text: &str) -> bool {
    let digits = text
        .strip_suffix(['k', 'm', 'g', 'K', 'M', 'G'])
        .unwrap_or(text);
    !digits.is_empty()
        && digits.len() <= 6
        && digits.chars().all(|c| c.is_ascii_digit())
        && !digits.trim_start_matches('0').is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_lowercase_ascii_labels() {
        assert!(is_host_name("api-v2-finance-staging.kisum.dev"));
        assert!(!is_host_name("AUTH.kisum.io"));
        assert!(!is_host_name("auth.kisum.io."));
        assert!(!is_host_name("u:pw@auth.kisum.io"));
        assert!(!is_host_name("au\u{200b}th.kisum.io"));
        assert!(!is_host_name("localhost"));
    }

    #[test]
    fn secret_keys_cannot_climb_out_of_their_directory() {
        assert!(is_secret_key("key-set.json"));
        assert!(!is_secret_key("../../etc/x"));
        assert!(!is_secret_key("a/b"));
    }

    #[test]
    fn image_references_are_checked_part_by_part() {
        assert!(is_image_tag("0.1.0"));
        assert!(is_image_tag(&format!("sha256:{}", "a".repeat(64))));
        assert!(!is_image_tag(""));
        assert!(!is_image_tag("sha256:"));
        assert!(is_image_registry("registry.kisum.io/kisum"));
        assert!(is_image_registry("registry.kisum.io:5000/kisum"));
        assert!(!is_image_registry(
            "https://robot:PW@registry.kisum.io/kisum"
        ));
        assert!(!is_image_path_part(".."));
    }

    #[test]
    fn networks_must_be_exact_and_private() {
        assert!(is_private_network("10.40.10.16/28"));
        assert!(is_private_network("127.0.0.1/32"));
        assert!(!is_private_network("0.0.0.0/0"));
        assert!(!is_private_network("8.8.8.0/24"));
        assert!(!is_private_network("10.40.10.17/28"));
        assert!(parse_cidr("not-a-cidr").is_none());
    }

    #[test]
    fn body_sizes_follow_nginx() {
        assert!(is_body_size("64k") && is_body_size("10m") && is_body_size("1024"));
        assert!(!is_body_size("0") && !is_body_size("lots") && !is_body_size("64k\"\nx: y"));
    }
}
