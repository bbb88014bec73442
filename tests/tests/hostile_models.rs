//! Untrusted model bytes never panic the runtime: truncated and mutated exports give `Err`
//! (or, when a mutation leaves a valid model, embeddings of the right size).

use burn::prelude::*;
use dim_trainer::model::EncoderConfig;
use proptest::prelude::*;
use std::sync::OnceLock;

fn model() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| dim_trainer::export::to_onnx(&EncoderConfig::tiny().init(&Device::flex()), false))
}

fn check(bytes: &[u8]) {
    // A panic inside would fail the test; a model that loads must embed or fail cleanly.
    if let Ok(enc) = dim_runtime::Encoder::from_bytes(bytes)
        && let Ok(y) = enc.embed_preprocessed(&[0.25; dim_runtime::INPUT_LEN])
    {
        assert_eq!(y.len(), enc.dim());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn truncated_models_are_errors(cut in 0usize..100_000) {
        let bytes = model();
        // The graph is the last large field (only the few-byte opset list follows it), so any
        // cut before the final 8 bytes lands inside it or before it.
        let cut = cut % (bytes.len() - 8);
        prop_assert!(dim_runtime::Encoder::from_bytes(&bytes[..cut]).is_err());
    }

    #[test]
    fn mutated_models_never_panic(flips in proptest::collection::vec((0usize..1 << 20, any::<u8>()), 1..8)) {
        let mut bytes = model().to_vec();
        let n = bytes.len();
        for (at, v) in flips {
            bytes[at % n] ^= v | 1;
        }
        check(&bytes);
    }

    #[test]
    fn mutated_headers_never_panic(flips in proptest::collection::vec((0usize..512, any::<u8>()), 1..6)) {
        // The graph structure (node list, shapes, attributes) sits before the weights' bulk.
        let mut bytes = model().to_vec();
        for (at, v) in flips {
            let at = at.min(bytes.len() - 1);
            bytes[at] ^= v | 1;
        }
        check(&bytes);
    }
}

#[test]
fn the_unmutated_model_loads() {
    let enc = dim_runtime::Encoder::from_bytes(model()).unwrap();
    assert_eq!(enc.dim(), 64);
}
