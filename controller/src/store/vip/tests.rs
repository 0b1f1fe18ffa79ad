use super::*;

fn cidr() -> IpNet {
    "10.96.0.0/29".parse().unwrap()
}

fn name(n: &str) -> NamespacedName {
    NamespacedName::new("shop", n)
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn requests(list: &[(&str, Option<&str>)]) -> BTreeMap<NamespacedName, Option<IpAddr>> {
    list.iter()
        .map(|(n, requested)| (name(n), requested.map(ip)))
        .collect()
}

#[test]
fn fresh_services_get_the_first_free_addresses() {
    let out = VipTable::default().assign(
        &requests(&[("a", None), ("b", Some("10.96.0.1")), ("c", None)]),
        cidr(),
    );
    assert!(out.conflicts.is_empty());
    assert_eq!(out.vips[&name("b")], ip("10.96.0.1"));
    assert_eq!(out.vips[&name("a")], ip("10.96.0.2"));
    assert_eq!(out.vips[&name("c")], ip("10.96.0.3"));
}

#[test]
fn the_holder_of_an_address_keeps_it() {
    let first = VipTable::default().assign(&requests(&[("a", None)]), cidr());
    let held = first.vips[&name("a")];
    let second = first
        .table
        .assign(&requests(&[("a", None), ("b", Some("10.96.0.1"))]), cidr());
    assert_eq!(second.vips[&name("a")], held);
    assert_eq!(second.conflicts.len(), 1);
    let (loser, problem) = &second.conflicts[0];
    assert_eq!(loser, &name("b"));
    assert_eq!(
        problem,
        &Problem::VipTaken {
            ip: held,
            holder: "shop/a".into()
        }
    );
}

#[test]
fn released_addresses_return_to_their_service_and_are_avoided_by_others() {
    let first = VipTable::default().assign(&requests(&[("a", None), ("b", None)]), cidr());
    let a = first.vips[&name("a")];
    let without_a = first
        .table
        .assign(&requests(&[("b", None), ("c", None)]), cidr());
    assert_ne!(without_a.vips[&name("c")], a);
    let back = without_a
        .table
        .assign(&requests(&[("a", None), ("b", None), ("c", None)]), cidr());
    assert_eq!(back.vips[&name("a")], a);
}

#[test]
fn remembered_addresses_are_given_out_when_nothing_else_is_free() {
    // A /30 has two host addresses.
    let small: IpNet = "10.96.0.0/30".parse().unwrap();
    let first = VipTable::default().assign(&requests(&[("a", None), ("b", None)]), small);
    let second = first
        .table
        .assign(&requests(&[("c", None), ("d", None)]), small);
    assert!(second.conflicts.is_empty());
    let third = second
        .table
        .assign(&requests(&[("c", None), ("d", None), ("e", None)]), small);
    assert_eq!(
        third.conflicts,
        [(name("e"), Problem::VipsExhausted { cidr: small })]
    );
}

#[test]
fn addresses_outside_a_new_cidr_are_replaced() {
    let first = VipTable::default().assign(&requests(&[("a", None)]), cidr());
    let other: IpNet = "10.97.0.0/29".parse().unwrap();
    let second = first.table.assign(&requests(&[("a", None)]), other);
    assert!(other.contains(&second.vips[&name("a")]));
}

#[test]
fn the_table_survives_a_write_and_a_read() {
    let dir = tempfile::tempdir().unwrap();
    let out = VipTable::default().assign(&requests(&[("a", None), ("b", None)]), cidr());
    let out = out.table.assign(&requests(&[("b", None)]), cidr());
    out.table.write(dir.path()).unwrap();
    assert_eq!(VipTable::read(dir.path()).unwrap(), out.table);
    assert_eq!(
        VipTable::read(&dir.path().join("absent")).unwrap(),
        VipTable::default()
    );
    std::fs::write(dir.path().join(VIPS_FILE), "{").unwrap();
    let err = VipTable::read(dir.path()).unwrap_err();
    assert!(err.to_string().contains("is not valid"), "{err}");
}
