//! The ABI's element-wise op codes name the functions the SDK's constants say
//! (`programs/sdk/src/sys.rs`), and a code outside them is the program's misuse of the ABI.
#![allow(clippy::expect_used)] // test helpers: a failed step is a failed test

mod common;

use chiron_sandbox::SandboxError;

const INPUT: [f32; 4] = [-1.0, 0.5, 2.0, -0.25];

/// An ABI code and the function it must compute.
type Case = (u32, fn(f32) -> f32);

#[test]
fn each_code_is_its_function_and_unknown_codes_are_misuse() {
    let expected: [Case; 9] = [
        (0, |v| v.max(0.0)),
        (1, f32::tanh),
        (2, |v| 1.0 / (1.0 + (-v).exp())),
        (3, f32::sqrt),
        (5, f32::exp),
        (6, f32::ln),
        (7, f32::abs),
        (8, |v| if v > 0.0 { v } else { 0.01 * v }),
        (10, |v| v / (1.0 + (-v).exp())),
    ];
    let mut rt = common::predict_runtime(INPUT);
    let x = rt.query_input().expect("input");
    for (code, f) in expected {
        let y = rt.unary(code, x).expect("known code");
        let got = rt.read(y).expect("read");
        for (g, v) in got.iter().zip(INPUT) {
            let want = f(v);
            assert!(
                (g - want).abs() <= 1e-6 || (g.is_nan() && want.is_nan()),
                "code {code} at {v}: {g} vs {want}"
            );
        }
    }
    // GELU (9): x Φ(x); Φ(2) = 0.97725, Φ(-1) = 0.15866 (tables of the normal CDF).
    let y = rt.unary(9, x).expect("gelu");
    let got = rt.read(y).expect("read");
    assert!((got[2] - 2.0 * 0.977_25).abs() < 1e-4, "{got:?}");
    assert!((got[0] + 0.158_66).abs() < 1e-4, "{got:?}");
    // Softmax (4) over the one row sums to one.
    let y = rt.unary(4, x).expect("softmax");
    let sum: f32 = rt.read(y).expect("read").iter().sum();
    assert!((sum - 1.0).abs() < 1e-6);
    for code in [11, 255, u32::MAX] {
        let err = rt.unary(code, x).expect_err("unknown code");
        assert!(
            matches!(&err, SandboxError::Abi { call: "unary", detail } if detail.contains("unknown op")),
            "{err:?}"
        );
    }
}
