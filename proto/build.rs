//! Compiles the wire contract with protox (pure Rust), so the build needs no system `protoc`.

const SCHEMAS: &[&str] = &[
    "envoy/service/discovery/v3/discovery.proto",
    "istio/workload/workload.proto",
    "istio/security/authorization.proto",
    "istio/v1/auth/ca.proto",
    "mesh/waypoint/v1/waypoint.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files: Vec<String> = SCHEMAS.iter().map(|s| format!("proto/{s}")).collect();
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(&files, ["proto"])?;
    tonic_prost_build::configure()
        // Maps that the controller encodes must encode the same way every time: resource
        // versions are digests of the bytes, and a HashMap's order changes per instance.
        .btree_map(".istio.workload.Workload.services")
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
