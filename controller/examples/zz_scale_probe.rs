// Temporary timing probe (xds-scale helper); deleted after use.
use controller::store::{Loader, StoreConfig};
use controller::translate::{TranslateConfig, translate};
use std::time::Instant;

fn main() {
    let dir = std::env::args().nth(1).unwrap();
    let what = std::env::args().nth(2).unwrap_or_default();
    let state = tempfile::tempdir().unwrap();
    let config = StoreConfig::new(&dir, state.path());
    let mut loader = Loader::open(config).unwrap();
    let first = loader.reload().unwrap();
    let tc = TranslateConfig::default();
    let mut reload = std::time::Duration::ZERO;
    let mut tr = std::time::Duration::ZERO;
    let n = 40;
    for _ in 0..n {
        if what != "translate" {
            let t = Instant::now();
            let s = loader.reload().unwrap();
            reload += t.elapsed();
            drop(s);
        }
        if what != "reload" {
            let t = Instant::now();
            let x = translate(&first, &tc, 1);
            tr += t.elapsed();
            drop(x);
        }
    }
    println!("reload {:?} translate {:?}", reload / n, tr / n);
}
