//! The cluster store's unit tests (the parts that need no Redis; tests/cluster.rs runs a real one).

use super::*;

#[test]
fn a_rooms_keys_share_one_cluster_slot_and_its_channel_names_it() {
    for key in [
        meta_key("a-b"),
        ops_key("a-b"),
        lease_key("a-b"),
        presence_key("a-b"),
    ] {
        assert!(key.contains("{a-b}"), "{key}");
    }
    assert_eq!(room_of(&channel("a-b")), Some("a-b"));
    assert_eq!(room_of("livecanvas:rooms"), None);
}

#[test]
fn channel_messages_parse_and_garbage_does_not() {
    let id = Uuid::new_v4();
    let frame = r#"{"type":"draw","x":1}"#;
    match parse_message(format!("o:7:{id}:{frame}").as_bytes()) {
        Some(Relayed::Op {
            seq: 7,
            from,
            frame: f,
        }) => {
            assert_eq!(from, Some(id));
            assert_eq!(&*f, frame);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        parse_message(b"c:3:12"),
        Some(Relayed::Count {
            version: 3,
            total: 12
        })
    ));
    assert!(matches!(
        parse_message(b"k:40"),
        Some(Relayed::Checkpoint(40))
    ));
    for garbage in [
        &b"x:1"[..],
        b"o:nope:-:{}",
        b"c:",
        b"c:12",
        b"\xff\xfe",
        b"",
    ] {
        assert!(parse_message(garbage).is_none(), "{garbage:?}");
    }
}
