//! Wire-format pins for proto/cri.proto: messages using the fields added since Kubernetes
//! 1.31, encoded and compared with bytes checked in here. The checked-in bytes are also
//! decoded field by field against a hand-written list (number, wire type, value taken from
//! the upstream api.proto), so a renumbered or retyped field fails naming its number.

use prost::Message;

use crate::cri::api as cri;

/// A decoded field: its number and value. Nested messages are decoded too.
#[derive(Debug, PartialEq)]
enum Field {
    Varint(u32, u64),
    /// A double, as its bits.
    Fixed64(u32, u64),
    Text(u32, &'static str),
    Message(u32, Vec<Field>),
}
use Field::{Fixed64, Message as Msg, Text, Varint};

fn varint(bytes: &[u8], at: &mut usize) -> u64 {
    let mut value = 0u64;
    let mut shift = 0;
    loop {
        let byte = bytes[*at];
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return value;
        }
        shift += 7;
    }
}

/// Decodes `bytes` the way `shape` expects: a length-delimited field is read as a nested
/// message where `shape` has one, else as text. A wire type or number that differs from
/// the shape still decodes, so the comparison shows it.
fn decode(bytes: &[u8], shape: &[Field]) -> Vec<Field> {
    let mut at = 0;
    let mut out = Vec::new();
    while at < bytes.len() {
        let key = varint(bytes, &mut at);
        let number = (key >> 3) as u32;
        match key & 7 {
            0 => out.push(Varint(number, varint(bytes, &mut at))),
            1 => {
                let raw: [u8; 8] = bytes[at..at + 8].try_into().unwrap();
                at += 8;
                out.push(Fixed64(number, u64::from_le_bytes(raw)));
            }
            2 => {
                let len = varint(bytes, &mut at) as usize;
                let body = &bytes[at..at + len];
                at += len;
                let nested = shape.iter().find_map(|f| match f {
                    Msg(n, inner) if *n == number => Some(inner),
                    _ => None,
                });
                out.push(match nested {
                    Some(inner) => Msg(number, decode(body, inner)),
                    None => {
                        let text = String::from_utf8_lossy(body).into_owned();
                        Text(number, Box::leak(text.into_boxed_str()))
                    }
                });
            }
            other => panic!("field {number}: wire type {other} is not used by these pins"),
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// `message` encodes to `golden`, and `golden` holds exactly `expected`, field by field.
fn pin<M: Message>(what: &str, message: &M, golden: &str, expected: &[Field]) {
    let encoded = message.encode_to_vec();
    let golden = unhex(golden);
    assert_eq!(
        decode(&golden, expected),
        expected,
        "{what}: checked-in bytes"
    );
    assert_eq!(
        decode(&encoded, expected),
        expected,
        "{what}: generated encoding {}",
        hex(&encoded)
    );
    assert_eq!(hex(&encoded), hex(&golden), "{what}: bytes");
}

#[test]
fn mount_image_volume_is_fields_9_and_10_and_image_spec_image_ref_20() {
    let mount = cri::Mount {
        container_path: "/data".into(),
        readonly: true,
        image: Some(cri::ImageSpec {
            image: "busybox".into(),
            image_ref: "sha256:ab".into(),
            ..Default::default()
        }),
        image_sub_path: "sub".into(),
        ..Default::default()
    };
    let expected = [
        Text(1, "/data"),
        Varint(3, 1),
        Msg(9, vec![Text(1, "busybox"), Text(20, "sha256:ab")]),
        Text(10, "sub"),
    ];
    pin(
        "Mount",
        &mount,
        "0a052f6461746118014a150a0762757379626f78a201097368613235363a61625203737562",
        &expected,
    );
}

#[test]
fn container_config_stop_signal_is_field_18_and_key_value_bytes() {
    let config = cri::ContainerConfig {
        envs: vec![cri::KeyValue {
            key: "A".into(),
            value: b"b".to_vec(),
        }],
        stop_signal: cri::Signal::Sigusr1 as i32,
        ..Default::default()
    };
    let expected = [Msg(6, vec![Text(1, "A"), Text(2, "b")]), Varint(18, 29)];
    pin(
        "ContainerConfig",
        &config,
        "32060a014112016290011d",
        &expected,
    );
}

#[test]
fn container_status_stop_signal_is_field_19() {
    let status = cri::ContainerStatus {
        id: "c1".into(),
        stop_signal: cri::Signal::Sigrtmax as i32,
        ..Default::default()
    };
    pin(
        "ContainerStatus",
        &status,
        "0a026331980141",
        &[Text(1, "c1"), Varint(19, 65)],
    );
}

#[test]
fn update_pod_sandbox_resources_request_and_runtime_features() {
    let request = cri::UpdatePodSandboxResourcesRequest {
        pod_sandbox_id: "p".into(),
        overhead: Some(cri::LinuxContainerResources {
            cpu_shares: 2,
            ..Default::default()
        }),
        resources: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 4096,
            ..Default::default()
        }),
    };
    pin(
        "UpdatePodSandboxResourcesRequest",
        &request,
        "0a0170120218021a03208020",
        &[
            Text(1, "p"),
            Msg(2, vec![Varint(3, 2)]),
            Msg(3, vec![Varint(4, 4096)]),
        ],
    );
    let features = cri::RuntimeFeatures {
        supplemental_groups_policy: true,
        user_namespaces_host_network: true,
    };
    pin(
        "RuntimeFeatures",
        &features,
        "08011001",
        &[Varint(1, 1), Varint(2, 1)],
    );
}

#[test]
fn stats_psi_and_io_fields() {
    let psi = cri::PsiStats {
        full: Some(cri::PsiData {
            total: 7,
            avg10: 1.5,
            ..Default::default()
        }),
        some: None,
    };
    let cpu = cri::CpuUsage {
        timestamp: 1,
        psi: Some(psi),
        ..Default::default()
    };
    let io = cri::IoUsage {
        timestamp: 2,
        psi: None,
    };
    let stats = cri::ContainerStats {
        cpu: Some(cpu),
        io: Some(io),
        ..Default::default()
    };
    pin(
        "ContainerStats",
        &stats,
        "12110801220d0a0b080711000000000000f83f32020802",
        &[
            Msg(
                2,
                vec![
                    Varint(1, 1),
                    Msg(
                        4,
                        vec![Msg(1, vec![Varint(1, 7), Fixed64(2, 1.5f64.to_bits())])],
                    ),
                ],
            ),
            Msg(6, vec![Varint(1, 2)]),
        ],
    );
}

#[test]
fn streaming_responses_carry_their_items_in_field_1() {
    let response = cri::StreamContainersResponse {
        containers: vec![cri::Container {
            id: "c".into(),
            ..Default::default()
        }],
    };
    pin(
        "StreamContainersResponse",
        &response,
        "0a030a0163",
        &[Msg(1, vec![Text(1, "c")])],
    );
}
