use std::net::IpAddr;

use mesh_proto::istio::security::string_match::MatchType;
use mesh_proto::istio::security::{
    Action, Address, Authorization, Group, Match, Rules, Scope, ServiceAccountMatch, StringMatch,
};

use super::*;

fn exact(s: &str) -> StringMatch {
    pattern(MatchType::Exact(s.into()))
}

fn prefix(s: &str) -> StringMatch {
    pattern(MatchType::Prefix(s.into()))
}

fn suffix(s: &str) -> StringMatch {
    pattern(MatchType::Suffix(s.into()))
}

fn presence() -> StringMatch {
    pattern(MatchType::Presence(()))
}

fn pattern(m: MatchType) -> StringMatch {
    StringMatch {
        match_type: Some(m),
    }
}

/// `a.b.c.d/n` or `v6/n`, host bits kept as written.
fn net(cidr: &str) -> Address {
    let (ip, length) = cidr.split_once('/').expect("address/length");
    let address = match ip.parse::<IpAddr>().expect("an IP address") {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    Address {
        address,
        length: length.parse().expect("a prefix length"),
    }
}

fn sa(namespace: &str, service_account: &str) -> ServiceAccountMatch {
    ServiceAccountMatch {
        namespace: namespace.into(),
        service_account: service_account.into(),
    }
}

fn conn(identity: Option<&str>, src: &str, dst: &str, dst_port: u16) -> Connection {
    Connection {
        src_identity: identity.map(|id| id.parse().expect("a SPIFFE id")),
        src_ip: src.parse().expect("source IP"),
        dst_ip: dst.parse().expect("destination IP"),
        dst_port,
    }
}

/// The connections every row of the field table is checked against, in this order.
fn standard_connections() -> [Connection; 4] {
    [
        // alice: a mesh client in `shop`.
        conn(
            Some("spiffe://cluster.local/ns/shop/sa/cart"),
            "10.1.2.3",
            "10.9.0.1",
            8080,
        ),
        // bob: another namespace and trust domain.
        conn(
            Some("spiffe://other.td/ns/billing/sa/api"),
            "10.2.0.5",
            "10.9.0.2",
            9090,
        ),
        // plain: plaintext from outside the mesh.
        conn(None, "192.168.1.10", "10.9.0.1", 8080),
        // v6: alice's identity over IPv6.
        conn(
            Some("spiffe://cluster.local/ns/shop/sa/cart"),
            "fd00::1",
            "fd00::99",
            8080,
        ),
    ]
}

fn alice() -> Connection {
    standard_connections()[0].clone()
}

fn bob() -> Connection {
    standard_connections()[1].clone()
}

fn plain() -> Connection {
    standard_connections()[2].clone()
}

fn policy(name: &str, action: Action, groups: Vec<Group>) -> Authorization {
    Authorization {
        name: name.into(),
        namespace: "shop".into(),
        scope: Scope::Namespace as i32,
        action: action as i32,
        groups,
        dry_run: false,
    }
}

fn dry(mut p: Authorization) -> Authorization {
    p.dry_run = true;
    p
}

/// One group, one `Rules`, one `Match`.
fn only(m: Match) -> Vec<Group> {
    vec![group(vec![rules(vec![m])])]
}

fn group(rules: Vec<Rules>) -> Group {
    Group { rules }
}

fn rules(matches: Vec<Match>) -> Rules {
    Rules { matches }
}

fn allow(name: &str, groups: Vec<Group>) -> Authorization {
    policy(name, Action::Allow, groups)
}

fn deny(name: &str, groups: Vec<Group>) -> Authorization {
    policy(name, Action::Deny, groups)
}

/// A group without rules: matches every connection.
fn everything() -> Vec<Group> {
    vec![group(vec![])]
}

/// What Istio sends for PeerAuthentication STRICT: deny whatever has no identity.
fn strict_mtls() -> Vec<Group> {
    only(not_principals([presence()]))
}

const T: bool = true;
const F: bool = false;

macro_rules! builders {
    ($($name:ident => $field:ident: $ty:ty;)*) => {$(
        fn $name(values: impl IntoIterator<Item = $ty>) -> Match {
            Match { $field: values.into_iter().collect(), ..Default::default() }
        }
    )*};
}

builders! {
    ns => namespaces: StringMatch;
    not_ns => not_namespaces: StringMatch;
    principals => principals: StringMatch;
    not_principals => not_principals: StringMatch;
    sas => service_accounts: ServiceAccountMatch;
    not_sas => not_service_accounts: ServiceAccountMatch;
    src => source_ips: Address;
    not_src => not_source_ips: Address;
    dst => destination_ips: Address;
    not_dst => not_destination_ips: Address;
    ports => destination_ports: u32;
    not_ports => not_destination_ports: u32;
}

/// The fields of `parts` together in one `Match`.
fn all(parts: impl IntoIterator<Item = Match>) -> Match {
    let mut out = Match::default();
    for p in parts {
        out.namespaces.extend(p.namespaces);
        out.not_namespaces.extend(p.not_namespaces);
        out.principals.extend(p.principals);
        out.not_principals.extend(p.not_principals);
        out.service_accounts.extend(p.service_accounts);
        out.not_service_accounts.extend(p.not_service_accounts);
        out.source_ips.extend(p.source_ips);
        out.not_source_ips.extend(p.not_source_ips);
        out.destination_ips.extend(p.destination_ips);
        out.not_destination_ips.extend(p.not_destination_ips);
        out.destination_ports.extend(p.destination_ports);
        out.not_destination_ports.extend(p.not_destination_ports);
    }
    out
}

fn bad_address(address: Vec<u8>, length: u32) -> Address {
    Address { address, length }
}

/// alice's principal.
const ALICE: &str = "cluster.local/ns/shop/sa/cart";

/// (row, match, expected for [alice, bob, plain, v6]).
#[rustfmt::skip]
fn field_rows() -> Vec<(&'static str, Match, [bool; 4])> {
    vec![
        ("empty match matches everything", Match::default(), [T, T, T, T]),
        // Namespaces.
        ("namespaces exact", ns([exact("shop")]), [T, F, F, T]),
        ("namespaces prefix", ns([prefix("sh")]), [T, F, F, T]),
        ("namespaces suffix", ns([suffix("ing")]), [F, T, F, F]),
        ("namespaces presence", ns([presence()]), [T, T, F, T]),
        ("namespaces: empty exact never matches absence", ns([exact("")]), [F, F, F, F]),
        ("namespaces: empty prefix needs an identity", ns([prefix("")]), [T, T, F, T]),
        ("namespaces are alternatives", ns([exact("billing"), exact("shop")]), [T, T, F, T]),
        ("not_namespaces exact", not_ns([exact("shop")]), [F, T, T, F]),
        ("not_namespaces suffix", not_ns([suffix("ing")]), [T, F, T, T]),
        ("not_namespaces presence: no identity only", not_ns([presence()]), [F, F, T, F]),
        // Principals.
        ("principals exact", principals([exact(ALICE)]), [T, F, F, T]),
        ("principals exact: no scheme", principals([exact(&format!("spiffe://{ALICE}"))]), [F, F, F, F]),
        ("principals exact: shorter", principals([exact("cluster.local/ns/shop/sa/car")]), [F, F, F, F]),
        ("principals exact: longer", principals([exact("cluster.local/ns/shop/sa/carts")]), [F, F, F, F]),
        ("principals exact: other trust domain", principals([exact("other.td/ns/shop/sa/cart")]), [F, F, F, F]),
        ("principals prefix: trust domain", principals([prefix("cluster.local/")]), [T, F, F, T]),
        ("principals prefix: across pieces", principals([prefix("cluster.local/ns/sh")]), [T, F, F, T]),
        ("principals prefix: whole", principals([prefix(ALICE)]), [T, F, F, T]),
        ("principals prefix: too long", principals([prefix(&format!("{ALICE}/"))]), [F, F, F, F]),
        ("principals prefix: namespace", principals([prefix("other.td/ns/billing/")]), [F, T, F, F]),
        ("principals suffix: service account", principals([suffix("/sa/api")]), [F, T, F, F]),
        ("principals suffix: across pieces", principals([suffix("ing/sa/api")]), [F, T, F, F]),
        ("principals suffix: whole", principals([suffix("other.td/ns/billing/sa/api")]), [F, T, F, F]),
        ("principals suffix: too long", principals([suffix("xother.td/ns/billing/sa/api")]), [F, F, F, F]),
        ("principals suffix: any trust domain", principals([suffix("/ns/shop/sa/cart")]), [T, F, F, T]),
        ("principals presence", principals([presence()]), [T, T, F, T]),
        ("principals are alternatives", principals([exact("x"), suffix("/sa/api")]), [F, T, F, F]),
        ("not_principals exact", not_principals([exact(ALICE)]), [F, T, T, F]),
        ("not_principals prefix", not_principals([prefix("other.td/")]), [T, F, T, T]),
        ("not_principals presence: no identity only", not_principals([presence()]), [F, F, T, F]),
        // Service accounts.
        ("service_accounts", sas([sa("shop", "cart")]), [T, F, F, T]),
        ("service_accounts: any trust domain", sas([sa("billing", "api")]), [F, T, F, F]),
        ("service_accounts: both parts", sas([sa("shop", "api")]), [F, F, F, F]),
        ("service_accounts are alternatives", sas([sa("shop", "api"), sa("billing", "api")]), [F, T, F, F]),
        ("not_service_accounts", not_sas([sa("shop", "cart")]), [F, T, T, F]),
        // Source addresses.
        ("source_ips v4 host", src([net("10.1.2.3/32")]), [T, F, F, F]),
        ("source_ips v4 block", src([net("10.0.0.0/8")]), [T, T, F, F]),
        ("source_ips: host bits ignored", src([net("10.1.2.99/24")]), [T, F, F, F]),
        ("source_ips: odd prefix", src([net("10.0.0.0/15")]), [T, F, F, F]),
        ("source_ips: v4 everything is not v6", src([net("0.0.0.0/0")]), [T, T, T, F]),
        ("source_ips: v6 everything is not v4", src([net("::/0")]), [F, F, F, T]),
        ("source_ips v6 block", src([net("fd00::/64")]), [F, F, F, T]),
        ("source_ips v6 host", src([net("fd00::1/128")]), [F, F, F, T]),
        ("source_ips v6 other host", src([net("fd00::2/128")]), [F, F, F, F]),
        ("source_ips: v4-mapped rule is v4", src([net("::ffff:10.1.2.0/120")]), [T, F, F, F]),
        ("source_ips are alternatives", src([net("192.168.0.0/16"), net("fd00::/8")]), [F, F, T, T]),
        ("not_source_ips v4", not_src([net("10.0.0.0/8")]), [F, F, T, T]),
        ("not_source_ips v6", not_src([net("::/0")]), [T, T, T, F]),
        ("source_ips with an exception", all([src([net("10.0.0.0/8")]), not_src([net("10.1.2.3/32")])]), [F, T, F, F]),
        // Destination addresses.
        ("destination_ips host", dst([net("10.9.0.1/32")]), [T, F, T, F]),
        ("destination_ips block", dst([net("10.9.0.0/16")]), [T, T, T, F]),
        ("destination_ips v6", dst([net("fd00::99/128")]), [F, F, F, T]),
        ("not_destination_ips", not_dst([net("10.9.0.2/32")]), [T, F, T, T]),
        // Destination ports.
        ("destination_ports", ports([8080]), [T, F, T, T]),
        ("destination_ports are alternatives", ports([9090, 8080]), [T, T, T, T]),
        ("destination_ports: out of range is not truncated", ports([8080 + 65536]), [F, F, F, F]),
        ("not_destination_ports", not_ports([8080]), [F, T, F, F]),
        // Fields combine with AND.
        ("every set field must match", all([ns([exact("shop")]), ports([8080]), src([net("10.0.0.0/8")])]), [T, F, F, F]),
        ("positive and negative fields", all([principals([presence()]), not_ns([exact("billing")])]), [T, F, F, T]),
        // Entries validate() rejects.
        ("bad address never matches", src([bad_address(vec![10, 1, 2], 8)]), [F, F, F, F]),
        ("bad prefix never matches", src([net("10.0.0.0/33")]), [F, F, F, F]),
        ("bad address excludes nothing", not_src([bad_address(vec![], 0)]), [T, T, T, T]),
        ("patternless string never matches", ns([StringMatch::default()]), [F, F, F, F]),
        ("patternless string excludes nothing", not_principals([StringMatch::default()]), [T, T, T, T]),
    ]
}

#[test]
fn each_field_and_its_not_form() {
    let conns = standard_connections();
    let names = ["alice", "bob", "plain", "v6"];
    for (row, m, expected) in field_rows() {
        let p = allow("p", only(m));
        for ((conn, want), name) in conns.iter().zip(expected).zip(names) {
            assert_eq!(matches(&p, conn), want, "{row}: {name}");
        }
    }
}

#[rustfmt::skip]
#[test]
fn ipv4_mapped_addresses_count_as_ipv4() {
    let mapped = conn(None, "::ffff:10.1.2.3", "::ffff:10.9.0.1", 8080);
    let v4 = plain();
    let rows: Vec<(&str, Match, &Connection, bool)> = vec![
        ("v4 rule, mapped source", src([net("10.1.2.3/32")]), &mapped, T),
        ("mapped rule, mapped source", src([net("::ffff:10.1.2.3/128")]), &mapped, T),
        ("v6 everything excludes mapped source", src([net("::/0")]), &mapped, F),
        ("v6 rule wider than the mapped range", src([net("::ffff:0:0/80")]), &mapped, F),
        ("mapped everything is v4 everything", src([net("::ffff:0:0/96")]), &mapped, T),
        ("v4 rule, mapped destination", dst([net("10.9.0.0/16")]), &mapped, T),
        ("mapped everything, v4 source", src([net("::ffff:0:0/96")]), &v4, T),
        ("mapped host, other v4 source", src([net("::ffff:10.1.2.3/128")]), &v4, F),
    ];
    for (row, m, conn, want) in rows {
        assert_eq!(matches(&allow("p", only(m)), conn), want, "{row}");
    }
}

/// (row, groups, expected for alice).
#[rustfmt::skip]
fn structure_rows() -> Vec<(&'static str, Vec<Group>, bool)> {
    let shop = || ns([exact("shop")]);
    let billing = || ns([exact("billing")]);
    vec![
        ("no groups match nothing", vec![], F),
        ("a group without rules matches everything", everything(), T),
        ("rules without matches match everything", vec![group(vec![rules(vec![])])], T),
        ("an empty match matches everything", only(Match::default()), T),
        ("one failing match", only(billing()), F),
        ("groups are alternatives: one matches", vec![group(vec![rules(vec![billing()])]), group(vec![rules(vec![shop()])])], T),
        ("groups are alternatives: none matches", vec![group(vec![rules(vec![billing()])]), group(vec![rules(vec![ports([9090])])])], F),
        ("rules all hold", vec![group(vec![rules(vec![shop()]), rules(vec![ports([8080])])])], T),
        ("rules: one fails", vec![group(vec![rules(vec![shop()]), rules(vec![ports([9090])])])], F),
        ("rules: an empty one does not fail", vec![group(vec![rules(vec![shop()]), rules(vec![])])], T),
        ("matches are alternatives: one matches", vec![group(vec![rules(vec![billing(), shop()])])], T),
        ("matches are alternatives: none matches", vec![group(vec![rules(vec![billing(), ports([9090])])])], F),
        (
            "from, to and when, as Istio writes them",
            vec![group(vec![
                rules(vec![billing(), principals([suffix("/sa/cart")])]),
                rules(vec![ports([80]), ports([8080])]),
                rules(vec![src([net("10.0.0.0/8")])]),
            ])],
            T,
        ),
        (
            "from, to and when: the condition fails",
            vec![group(vec![
                rules(vec![shop()]),
                rules(vec![ports([8080])]),
                rules(vec![src([net("192.168.0.0/16")])]),
            ])],
            F,
        ),
    ]
}

#[test]
fn groups_rules_and_matches_nest() {
    for (row, groups, want) in structure_rows() {
        assert_eq!(matches(&allow("p", groups), &alice()), want, "{row}");
    }
}

/// (row, policies, connection, allowed, reason as displayed).
type DecisionRow = (
    &'static str,
    Vec<Authorization>,
    Connection,
    bool,
    &'static str,
);

#[rustfmt::skip]
fn decision_rows() -> Vec<DecisionRow> {
    let mut unknown = deny("unknown-action", everything());
    unknown.action = 7;
    let mut unknown_unmatched = deny("unknown-action", only(ns([exact("billing")])));
    unknown_unmatched.action = 7;
    let shop = || only(ns([exact("shop")]));
    let port = |p| only(ports([p]));
    vec![
        ("no policies", vec![], alice(), T, "no policy applies"),
        ("allow matches", vec![allow("a", shop())], alice(), T, "allowed by policy shop/a"),
        ("allow present, unmatched", vec![allow("a", shop())], bob(), F, "no ALLOW policy matched"),
        ("allow without groups denies all", vec![allow("deny-all", vec![])], alice(), F, "no ALLOW policy matched"),
        ("allow with an empty rule allows all", vec![allow("all", everything())], plain(), T, "allowed by policy shop/all"),
        ("deny matches", vec![deny("d", only(ns([exact("billing")])))], bob(), F, "denied by policy shop/d"),
        ("deny unmatched", vec![deny("d", only(ns([exact("billing")])))], alice(), T, "no DENY policy matched"),
        ("deny without groups denies nothing", vec![deny("d", vec![])], alice(), T, "no DENY policy matched"),
        ("deny wins over allow", vec![allow("a", everything()), deny("d", everything())], alice(), F, "denied by policy shop/d"),
        ("deny wins in any order", vec![deny("d", everything()), allow("a", everything())], alice(), F, "denied by policy shop/d"),
        ("unmatched deny, matching allow", vec![deny("d", port(22)), allow("a", port(8080))], alice(), T, "allowed by policy shop/a"),
        ("unmatched deny, unmatched allow", vec![deny("d", port(22)), allow("a", port(443))], alice(), F, "no ALLOW policy matched"),
        ("the first matching allow is named", vec![allow("a1", port(443)), allow("a2", port(8080)), allow("a3", everything())], alice(), T, "allowed by policy shop/a2"),
        ("the first matching deny is named", vec![deny("d1", everything()), deny("d2", everything())], alice(), F, "denied by policy shop/d1"),
        // Plaintext from outside the mesh.
        ("plaintext under STRICT mTLS", vec![deny("strict", strict_mtls())], plain(), F, "denied by policy shop/strict"),
        ("mesh peer under STRICT mTLS", vec![deny("strict", strict_mtls())], alice(), T, "no DENY policy matched"),
        ("plaintext needs an identity for principals", vec![allow("a", only(principals([presence()])))], plain(), F, "no ALLOW policy matched"),
        ("plaintext needs an identity for namespaces", vec![allow("a", only(ns([prefix("")])))], plain(), F, "no ALLOW policy matched"),
        ("plaintext allowed by address", vec![allow("a", only(src([net("192.168.0.0/16")])))], plain(), T, "allowed by policy shop/a"),
        ("plaintext passes a namespaces deny", vec![deny("d", shop())], plain(), T, "no DENY policy matched"),
        ("plaintext hit by a not_namespaces deny", vec![deny("d", only(not_ns([exact("shop")])))], plain(), F, "denied by policy shop/d"),
        ("plaintext hit by a not_service_accounts deny", vec![deny("d", only(not_sas([sa("shop", "cart")])))], plain(), F, "denied by policy shop/d"),
        // Robustness.
        ("unknown action fails closed", vec![unknown], alice(), F, "denied by policy shop/unknown-action"),
        ("unknown action, unmatched", vec![unknown_unmatched], alice(), T, "no DENY policy matched"),
        ("dry-run policies are not enforced", vec![dry(deny("d", everything())), dry(allow("a", vec![]))], alice(), T, "no policy applies"),
    ]
}

#[test]
fn decisions() {
    for (row, policies, conn, allowed, reason) in decision_rows() {
        let decision = evaluate(&policies, &conn);
        assert_eq!(decision.allowed, allowed, "{row}");
        assert_eq!(decision.reason.allows(), allowed, "{row}");
        assert_eq!(decision.reason.to_string(), reason, "{row}");
        let named = decision.policy().map(|p| format!(" by policy {p}"));
        assert_eq!(named.is_some(), reason.contains(" by policy "), "{row}");
        assert!(named.is_none_or(|n| reason.ends_with(&n)), "{row}");
        if !policies.iter().any(|p| p.dry_run) {
            assert_eq!(
                decision.dry_run.capacity(),
                0,
                "{row}: allocated for dry-run"
            );
        }
    }
}

/// (row, policies, connection, allowed, [(dry-run policy, matched, would)]).
type DryRunRow = (
    &'static str,
    Vec<Authorization>,
    Connection,
    bool,
    Vec<(&'static str, bool, Verdict)>,
);

#[rustfmt::skip]
fn dry_run_rows() -> Vec<DryRunRow> {
    use Verdict::{Allow, Deny};
    let port = |p| only(ports([p]));
    vec![
        ("matching dry-run deny would deny", vec![dry(deny("dd", everything()))], alice(), T, vec![("dd", T, Deny)]),
        ("unmatched dry-run deny changes nothing", vec![dry(deny("dd", port(22)))], alice(), T, vec![("dd", F, Allow)]),
        ("matching dry-run allow alone", vec![dry(allow("da", port(8080)))], alice(), T, vec![("da", T, Allow)]),
        ("unmatched dry-run allow alone would deny", vec![dry(allow("da", port(22)))], alice(), T, vec![("da", F, Deny)]),
        (
            "unmatched dry-run allow beside a matching allow",
            vec![allow("a", everything()), dry(allow("da", port(22)))],
            alice(), T, vec![("da", F, Allow)],
        ),
        (
            "matching dry-run allow would admit",
            vec![allow("a", port(22)), dry(allow("da", port(8080)))],
            alice(), F, vec![("da", T, Allow)],
        ),
        (
            "an enforced deny beats a dry-run allow",
            vec![deny("d", everything()), dry(allow("da", everything()))],
            alice(), F, vec![("da", T, Deny)],
        ),
        (
            "unmatched dry-run deny under an unmatched allow",
            vec![allow("a", port(22)), dry(deny("dd", port(22)))],
            alice(), F, vec![("dd", F, Deny)],
        ),
        (
            "plaintext under a dry-run STRICT mTLS",
            vec![allow("a", everything()), dry(deny("strict", strict_mtls()))],
            plain(), T, vec![("strict", T, Deny)],
        ),
        (
            "each dry-run policy is judged alone, in order",
            vec![dry(allow("da", port(22))), dry(deny("dd", port(8080))), dry(deny("dx", vec![]))],
            alice(), T, vec![("da", F, Deny), ("dd", T, Deny), ("dx", F, Allow)],
        ),
    ]
}

#[test]
fn dry_run_is_reported_and_never_enforced() {
    for (row, policies, conn, allowed, outcomes) in dry_run_rows() {
        let decision = evaluate(&policies, &conn);
        assert_eq!(decision.allowed, allowed, "{row}");
        let got: Vec<_> = decision
            .dry_run
            .iter()
            .map(|o| (o.policy.name, o.matched, o.would))
            .collect();
        assert_eq!(got, outcomes, "{row}");
        let changes: Vec<_> = decision.dry_run_changes().map(|o| o.policy.name).collect();
        let expected: Vec<_> = outcomes
            .iter()
            .filter(|(_, _, would)| (*would == Verdict::Allow) != allowed)
            .map(|(name, _, _)| *name)
            .collect();
        assert_eq!(changes, expected, "{row}");
    }
}

#[test]
fn dry_run_outcome_carries_the_policy_action() {
    let policies = [
        dry(deny("dd", everything())),
        dry(allow("da", everything())),
    ];
    let decision = evaluate(&policies, &alice());
    let actions: Vec<_> = decision.dry_run.iter().map(|o| o.action).collect();
    assert_eq!(actions, [Verdict::Deny, Verdict::Allow]);
    assert_eq!(decision.dry_run[0].policy.to_string(), "shop/dd");
    assert_eq!(decision.dry_run[0].would.to_string(), "deny");
}

/// The place of a field of the first match, as validation errors name it.
fn at(path: &str) -> String {
    format!("policy shop/p: groups[0].rules[0].matches[0].{path}")
}

/// (row, policy, every problem as displayed).
#[rustfmt::skip]
fn validation_rows() -> Vec<(&'static str, Authorization, Vec<String>)> {
    let mut bad_action = allow("p", everything());
    bad_action.action = 2;
    let mut bad_scope = allow("p", everything());
    bad_scope.scope = 9;
    let full = all([
        ns([exact("a"), prefix("b"), suffix("c"), presence()]),
        not_principals([presence()]),
        src([net("10.0.0.0/8"), net("fd00::/8"), net("0.0.0.0/0"), net("::1/128")]),
        ports([0, 65535]),
        sas([sa("shop", "cart")]),
    ]);
    let messy = vec![
        group(vec![]),
        group(vec![
            rules(vec![Match::default()]),
            rules(vec![Match::default(), all([ns([StringMatch::default()]), ports([65536])])]),
        ]),
    ];
    vec![
        ("a full valid policy", allow("p", only(full)), vec![]),
        ("a policy without groups", allow("p", vec![]), vec![]),
        ("unknown action", bad_action, vec!["policy shop/p: unknown action 2; expected ALLOW (0) or DENY (1)".into()]),
        (
            "unknown scope",
            bad_scope,
            vec!["policy shop/p: unknown scope 9; expected GLOBAL (0), NAMESPACE (1) or WORKLOAD_SELECTOR (2)".into()],
        ),
        (
            "address length",
            allow("p", only(src([bad_address(vec![10, 0, 0], 8)]))),
            vec![format!("{}: address has 3 bytes; expected 4 (IPv4) or 16 (IPv6)", at("source_ips[0]"))],
        ),
        (
            "IPv4 prefix too long",
            allow("p", only(not_dst([net("10.0.0.0/8"), net("10.0.0.0/33")]))),
            vec![format!("{}: prefix length 33 is longer than the address (32 bits)", at("not_destination_ips[1]"))],
        ),
        (
            "IPv6 prefix too long",
            allow("p", only(dst([net("fd00::/129")]))),
            vec![format!("{}: prefix length 129 is longer than the address (128 bits)", at("destination_ips[0]"))],
        ),
        (
            "port out of range",
            allow("p", only(not_ports([80, 70000]))),
            vec![format!("{}: port 70000 is not in 0-65535", at("not_destination_ports[1]"))],
        ),
        (
            "string without a pattern",
            allow("p", only(not_principals([StringMatch::default()]))),
            vec![format!("{}: string match has no pattern", at("not_principals[0]"))],
        ),
        (
            "every problem is reported, with its place",
            allow("p", messy),
            vec![
                "policy shop/p: groups[1].rules[1].matches[1].namespaces[0]: string match has no pattern".into(),
                "policy shop/p: groups[1].rules[1].matches[1].destination_ports[0]: port 65536 is not in 0-65535".into(),
            ],
        ),
    ]
}

#[test]
fn validation() {
    for (row, policy, expected) in validation_rows() {
        let got: Vec<String> = match validate(&policy) {
            Ok(()) => vec![],
            Err(problems) => problems.iter().map(ToString::to_string).collect(),
        };
        assert_eq!(got, expected, "{row}");
    }
}
