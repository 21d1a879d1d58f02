//! CNI results: the raw JSON a plugin returned (passed on as `prevResult`, persisted for DEL)
//! plus the parts berth uses: the pod's IPs and the interfaces.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The CNI spec versions berth speaks (what Debian's plugins 1.1.1 speak).
const SUPPORTED_VERSIONS: [&str; 6] = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"];

pub fn is_supported_version(version: &str) -> bool {
    SUPPORTED_VERSIONS.contains(&version)
}

/// Whether `version` passes the ADD result to DEL as `prevResult` (CNI ≥ 0.4.0).
pub fn version_has_del_prev_result(version: &str) -> bool {
    matches!(version, "0.4.0" | "1.0.0")
}

/// Whether results of `version` have the `ips`/`interfaces` layout (≥ 0.3.0), which chained
/// plugins need as `prevResult`.
pub fn version_chains(version: &str) -> bool {
    !matches!(version, "0.1.0" | "0.2.0")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniInterface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The netns path for an interface inside the pod; `None` for host-side ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CniResult {
    pub raw: Value,
    /// The pod's addresses, IPv4 first.
    pub ips: Vec<IpAddr>,
    pub interfaces: Vec<CniInterface>,
}

impl CniResult {
    /// Parses a result of any supported version. Addresses on host-side interfaces (an `ips[]`
    /// entry whose `interface` index names one without a `sandbox`) are not the pod's.
    pub fn parse(raw: Value) -> Result<CniResult, String> {
        let interfaces: Vec<CniInterface> = match raw.get("interfaces") {
            None | Some(Value::Null) => Vec::new(),
            Some(value) => serde_json::from_value(value.clone())
                .map_err(|e| format!("invalid \"interfaces\": {e}"))?,
        };
        let mut cidrs: Vec<&str> = Vec::new();
        if let Some(ips) = raw.get("ips").and_then(Value::as_array) {
            for entry in ips {
                let host_side = entry
                    .get("interface")
                    .and_then(Value::as_u64)
                    .and_then(|i| interfaces.get(usize::try_from(i).ok()?))
                    .is_some_and(|iface| iface.sandbox.as_deref().unwrap_or("").is_empty());
                if host_side {
                    continue;
                }
                let address = entry
                    .get("address")
                    .and_then(Value::as_str)
                    .ok_or("an \"ips\" entry has no \"address\"")?;
                cidrs.push(address);
            }
        }
        // 0.1.0/0.2.0 results.
        for key in ["ip4", "ip6"] {
            if let Some(ip) = raw
                .get(key)
                .and_then(|v| v.get("ip"))
                .and_then(Value::as_str)
            {
                cidrs.push(ip);
            }
        }
        let mut ips = cidrs
            .into_iter()
            .map(|cidr| {
                let addr = cidr.split_once('/').map_or(cidr, |(addr, _)| addr);
                addr.parse::<IpAddr>()
                    .map_err(|e| format!("invalid address {cidr:?}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        ips.sort_by_key(IpAddr::is_ipv6); // stable: keeps the plugin's order within a family
        ips.dedup();
        Ok(CniResult {
            raw,
            ips,
            interfaces,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bridge_result(version: &str) -> Value {
        json!({
            "cniVersion": version,
            "interfaces": [
                {"name": "cni0", "mac": "aa:bb:cc:00:00:01"},
                {"name": "veth1234", "mac": "aa:bb:cc:00:00:02"},
                {"name": "eth0", "mac": "aa:bb:cc:00:00:03", "sandbox": "/run/berth/netns/abc"}
            ],
            "ips": [
                {"version": "6", "address": "fd00::5/64", "gateway": "fd00::1", "interface": 2},
                {"version": "4", "address": "10.88.0.5/16", "gateway": "10.88.0.1", "interface": 2}
            ],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {}
        })
    }

    #[test]
    fn parses_0_4_0_with_ipv4_first() {
        let result = CniResult::parse(bridge_result("0.4.0")).unwrap();
        assert_eq!(
            result.ips,
            [
                "10.88.0.5".parse::<IpAddr>().unwrap(),
                "fd00::5".parse().unwrap()
            ]
        );
        assert_eq!(result.interfaces.len(), 3);
        assert_eq!(result.interfaces[2].name, "eth0");
        assert_eq!(
            result.interfaces[2].sandbox.as_deref(),
            Some("/run/berth/netns/abc")
        );
        assert_eq!(result.interfaces[0].sandbox, None);
    }

    #[test]
    fn parses_1_0_0_without_version_field_in_ips() {
        let mut raw = bridge_result("1.0.0");
        for ip in raw["ips"].as_array_mut().unwrap() {
            ip.as_object_mut().unwrap().remove("version");
        }
        let result = CniResult::parse(raw.clone()).unwrap();
        assert_eq!(result.ips.len(), 2);
        assert!(result.ips[0].is_ipv4());
        assert_eq!(result.raw, raw);
    }

    #[test]
    fn host_side_addresses_are_not_pod_ips() {
        let raw = json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "cni0"}, {"name": "eth0", "sandbox": "/ns"}],
            "ips": [
                {"address": "10.88.0.1/16", "interface": 0},
                {"address": "10.88.0.7/16", "interface": 1},
                {"address": "10.99.0.7/16"}
            ]
        });
        let ips = CniResult::parse(raw).unwrap().ips;
        assert_eq!(
            ips,
            [
                "10.88.0.7".parse::<IpAddr>().unwrap(),
                "10.99.0.7".parse().unwrap()
            ]
        );
    }

    #[test]
    fn parses_0_2_0() {
        let raw = json!({
            "cniVersion": "0.2.0",
            "ip6": {"ip": "fd00::9/64"},
            "ip4": {"ip": "10.1.2.3/24", "gateway": "10.1.2.1"},
            "dns": {}
        });
        let result = CniResult::parse(raw).unwrap();
        assert_eq!(
            result.ips,
            [
                "10.1.2.3".parse::<IpAddr>().unwrap(),
                "fd00::9".parse().unwrap()
            ]
        );
        assert!(result.interfaces.is_empty());
    }

    #[test]
    fn malformed_results_are_errors() {
        assert!(CniResult::parse(json!({"ips": [{"address": "banana/24"}]})).is_err());
        assert!(CniResult::parse(json!({"ips": [{"gateway": "10.0.0.1"}]})).is_err());
        assert!(CniResult::parse(json!({"interfaces": "eth0"})).is_err());
    }

    #[test]
    fn result_round_trips_through_json() {
        let result = CniResult::parse(bridge_result("1.0.0")).unwrap();
        let back: CniResult =
            serde_json::from_str(&serde_json::to_string(&result).unwrap()).unwrap();
        assert_eq!(back, result);
    }

    #[test]
    fn versions() {
        assert!(is_supported_version("0.3.1") && !is_supported_version("1.1.0"));
        assert!(version_has_del_prev_result("0.4.0") && !version_has_del_prev_result("0.3.1"));
        assert!(version_chains("0.3.0") && !version_chains("0.2.0"));
    }
}
