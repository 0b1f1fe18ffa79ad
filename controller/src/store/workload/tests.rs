use super::*;

fn deployment(replicas: u32) -> Deployment {
    Deployment {
        namespace: "shop".into(),
        name: "cart".into(),
        labels: Labels::new(),
        replicas,
        template: PodTemplate {
            labels: [("app".to_string(), "cart".to_string())].into(),
            service_account: "cart".into(),
            node: None,
            containers: Vec::new(),
        },
    }
}

#[test]
fn derived_uids_look_like_kubernetes_uids_and_are_stable() {
    let uid = derived_uid("shop", "cart-0");
    let lengths: Vec<usize> = uid.split('-').map(str::len).collect();
    assert_eq!(lengths, [8, 4, 4, 4, 12]);
    assert!(uid.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()));
    assert_eq!(uid, derived_uid("shop", "cart-0"));
    assert_ne!(uid, derived_uid("shop", "cart-1"));
    assert_ne!(uid, derived_uid("shopc", "art-0"));
}

#[test]
fn a_deployment_makes_numbered_pods_from_its_template() {
    let pods = deployment(2).pods();
    let names: Vec<&str> = pods.iter().map(|p| &*p.name).collect();
    assert_eq!(names, ["cart-0", "cart-1"]);
    for pod in &pods {
        assert_eq!(pod.labels["app"], "cart");
        assert_eq!(&*pod.service_account, "cart");
        assert_eq!(pod.from_deployment.as_deref(), Some("cart"));
        assert_eq!(pod.uid, derived_uid("shop", &pod.name));
    }
    assert!(deployment(0).pods().is_empty());
}
