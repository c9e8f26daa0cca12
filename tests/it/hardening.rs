//! The operator binary as the toolchain links it: a position-independent executable, so that its
//! own code, like its libraries, heap and stacks, is placed at a random address each start. The
//! operator holds wide rights in shared clusters; a memory-safety bug in a dependency should not
//! also find its code at a known address.

/// ELF `e_type` (offset 16, little-endian): 2 is a fixed-address executable, 3 a
/// position-independent one.
#[test]
fn the_operator_binary_is_position_independent() {
    let bytes = std::fs::read(env!("CARGO_BIN_EXE_etcd-operator")).unwrap();
    assert_eq!(&bytes[..4], b"\x7fELF");
    let e_type = u16::from_le_bytes([bytes[16], bytes[17]]);
    assert_eq!(e_type, 3, "the binary is linked at a fixed address (ELF type {e_type})");
}
