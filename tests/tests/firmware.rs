//! The firmware in QEMU (Arm MPS2 AN386, Cortex-M4; and AN385, Cortex-M3): build it for
//! thumbv7em-none-eabihf (thumbv7m-none-eabi), run it, and compare what it prints — the
//! embedding, every layer's activations, the few-shot session's answers — with tract and the
//! host engine on the same image and model.

use std::path::PathBuf;
use std::process::Command;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/tiny").join(name)
}

/// A target folder of its own: the `cargo test` that runs this holds the lock on the outer one.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().join("firmware-build")
}

/// A Cortex-M core QEMU emulates and the Rust target that builds for it.
#[derive(Clone, Copy)]
struct Core {
    target: &'static str,
    cpu: &'static str,
    machine: &'static str,
}

/// Cortex-M4 (FPU, DSP): the firmware's main target.
const M4: Core = Core { target: "thumbv7em-none-eabihf", cpu: "cortex-m4", machine: "mps2-an386" };
/// Cortex-M3: no FPU (soft-float f32), no DSP (the engine's portable twins).
const M3: Core = Core { target: "thumbv7m-none-eabi", cpu: "cortex-m3", machine: "mps2-an385" };

/// Builds the firmware for `core` (once per target folder; cargo serialises concurrent builds).
fn firmware_elf_for(core: Core) -> PathBuf {
    build_firmware(core.target, &[], "dim-firmware")
}

/// Builds the firmware's binary `bin` for `target` with the extra cargo `args` (features).
fn build_firmware(target: &str, args: &[&str], bin: &str) -> PathBuf {
    if Command::new("qemu-system-arm").arg("--version").output().is_err() {
        panic!("qemu-system-arm not found: run the suite with scripts/test, which installs it (Debian package qemu-system-arm)");
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let dir = target_dir();
    let build = Command::new(&cargo)
        .current_dir(&root)
        .args(["build", "--release", "-p", "dim-firmware", "--target", target, "--bin", bin])
        .args(args)
        .env("CARGO_TARGET_DIR", &dir)
        .output()
        .unwrap();
    assert!(build.status.success(), "firmware build failed:\n{}", String::from_utf8_lossy(&build.stderr));
    dir.join(target).join("release").join(bin)
}

/// Runs the firmware on `core` in QEMU (with more QEMU `options`) and, once it says `ready:`,
/// writes `input` to its standard input (semihosting); returns its whole output.
fn run_on(core: Core, input: &[u8], options: &[&str]) -> String {
    use std::io::{BufRead, Write};
    let mut child = Command::new("timeout")
        .args(["300", "qemu-system-arm", "-cpu", core.cpu, "-machine", core.machine, "-display", "none", "-monitor", "none", "-serial", "none"])
        // No serial or monitor on the standard input: semihosting's reads get all of it.
        .args(options)
        .args(["-semihosting-config", "enable=on,target=native", "-kernel"])
        .arg(firmware_elf_for(core))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (mut stdin, stdout) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            all += &line;
            all.push('\n');
            let _ = tx.send(line);
        }
        all
    });
    // The channel closes when the output ends: a firmware that never gets ready fails below.
    while let Ok(line) = rx.recv() {
        if line.starts_with("ready: ") {
            // Answers are read while this writes: neither side waits on a full pipe.
            stdin.write_all(input).unwrap();
            break;
        }
    }
    drop(stdin);
    let status = child.wait().unwrap();
    let out = reader.join().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success() && out.contains("ready: "), "QEMU exit {status:?}:\n{out}\n{err}");
    out
}

/// tract's embedding of the golden image through the same int8 model, printed with the blob's
/// scale (what the firmware prints at start).
fn tracts_golden_embedding() -> Vec<i8> {
    let rgb: dim_runtime::Rgb32 = std::fs::read(data("golden.rgb")).unwrap().try_into().unwrap();
    let mut input = vec![0f32; dim_runtime::INPUT_LEN];
    dim_runtime::preprocess::rgb32_to_input(&rgb, &mut input).unwrap();
    let int8 = std::fs::read(data("encoder.int8.onnx")).unwrap();
    let y = dim_runtime::Encoder::from_bytes_as_written(&int8).unwrap().embed_preprocessed(&input).unwrap();
    let blob = std::fs::read(data("encoder.blob")).unwrap();
    let model = dim_runtime::engine::Model::parse(&blob).unwrap();
    let mut want = vec![0i8; y.len()];
    model.quantize_output(&y, &mut want);
    want
}

#[test]
fn firmware_in_qemu_prints_tracts_embedding() {
    // One instruction per virtual nanosecond: the firmware's SysTick profile counts instructions.
    let out = run_on(M4, b"", &["-icount", "shift=0"]);
    let line = out.lines().find_map(|l| l.strip_prefix("embedding: ")).unwrap_or_else(|| panic!("no embedding line in:\n{out}"));
    let got: Vec<i8> = line.split(',').map(|v| v.trim().parse().unwrap()).collect();

    let want = tracts_golden_embedding();
    assert_eq!(got.len(), want.len());
    let worst = got.iter().zip(&want).map(|(a, b)| (*a as i32 - *b as i32).abs()).max().unwrap();
    assert!(worst <= 1, "firmware {got:?}\ntract    {want:?}");
    eprintln!("firmware == tract on {} of {} values (worst {worst} LSB)", got.iter().zip(&want).filter(|(a, b)| a == b).count(), got.len());
}

/// The firmware's serial session in QEMU, driven with the shipped golden set (two validation
/// images of each CIFAR-10 class, `trainer prototypes --golden-set`): it starts from the shipped
/// prototypes (5 classes enrolled), classifies every image, enrols a class it did not know,
/// forgets it again — and every answer is what the host's `PrototypeStore` says of the
/// embeddings the firmware printed.
#[test]
fn firmware_in_qemu_enrols_classifies_and_flags_novelty() {
    use dim_runtime::PrototypeStore;
    use dim_runtime::prototypes::file::PrototypeFile;
    let rgb = std::fs::read(data("golden-set.rgb")).unwrap();
    let labels: Vec<String> = std::fs::read_to_string(data("golden-set.labels")).unwrap().lines().map(String::from).collect();
    let frames: Vec<&[u8]> = rgb.chunks_exact(dim_runtime::RGB32_LEN).collect();
    assert_eq!(frames.len(), labels.len());
    let frame = |i: usize| format!("frame {}\n", frames[i].iter().map(|b| format!("{b:02x}")).collect::<String>());
    // Every image: classify. Then enrol the first image of a class the file lacks, classify the
    // second one, forget, classify it again.
    let protos_bytes = std::fs::read(data("prototypes.bin")).unwrap();
    let protos = PrototypeFile::parse(&protos_bytes).unwrap();
    let names: Vec<&str> = protos.label_names().collect();
    let new = labels.iter().position(|l| !names.contains(&l.as_str())).expect("a class not enrolled");
    let mut script = String::new();
    for i in 0..frames.len() {
        script += &(frame(i) + "embed\nclassify\n");
    }
    let label = &labels[new];
    script += &format!("{}enrol {label}\n{}embed\nclassify\nforget {label}\nclassify\n", frame(new), frame(new + 1));
    let out = run_on(M4, script.as_bytes(), &[]);
    let answers: Vec<&str> = out.lines().skip_while(|l| !l.starts_with("ready: ")).skip(1).filter(|l| *l != "frame ok").collect();
    assert_eq!(answers.len(), 2 * frames.len() + 5, "{out}");

    // The host's store on the firmware's own embeddings.
    const D: usize = 64;
    let mut store = PrototypeStore::<64, D>::new();
    protos.load_into(&mut store).unwrap();
    let parse = |line: &str| -> [i8; D] {
        let v: Vec<i8> = line.strip_prefix("embedding: ").unwrap_or_else(|| panic!("{line}")).split(',').map(|v| v.parse().unwrap()).collect();
        v.try_into().unwrap()
    };
    let answer = |store: &PrototypeStore<64, D>, names: &[&str], y: &[i8; D]| {
        let m = store.nearest(y).unwrap();
        let name = names[m.label as usize];
        if m.novelty > protos.threshold {
            format!("novel novelty {:.4} nearest {name}", m.novelty)
        } else {
            format!("class {name} similarity {:.4} novelty {:.4}", m.similarity, m.novelty)
        }
    };
    let (mut novel, mut right) = (0, 0);
    for (i, pair) in answers[..2 * frames.len()].chunks(2).enumerate() {
        let want = answer(&store, &names, &parse(pair[0]));
        assert_eq!(pair[1], want, "image {i} ({})", labels[i]);
        novel += pair[1].starts_with("novel") as usize;
        right += pair[1].starts_with(&format!("class {} ", labels[i])) as usize;
    }
    // Both kinds of answer occur on these files (the 5 % threshold rarely fires: see README).
    eprintln!("golden set: {right} of 10 enrolled-class images recognised, {novel} of 20 images called novel");
    assert!(right >= 4 && novel >= 1, "the shipped prototypes should recognise some and flag some:\n{}", answers.join("\n"));

    let rest = &answers[2 * frames.len()..];
    assert_eq!(rest[0], format!("enrolled {label} ({} prototypes)", protos.len() + 1));
    let y = parse(rest[1]);
    let mut names_after: Vec<&str> = names.clone();
    names_after.push(label);
    let mut grown = PrototypeStore::<64, D>::new();
    protos.load_into(&mut grown).unwrap();
    // The enrolled embedding is the first image's: the firmware printed it in the first pass.
    grown.insert(names.len() as u16, parse(answers[2 * new])).unwrap();
    assert_eq!(rest[2], answer(&grown, &names_after, &y));
    assert_eq!(rest[3], "forgot 1 prototypes");
    assert_eq!(rest[4], answer(&store, &names, &y));
}

/// The firmware's layer-by-layer profile of one inference (QEMU `-icount shift=0`: SysTick at
/// 25 MHz ticks every 40 instructions) as instructions per multiply-accumulate, and its layers'
/// CRCs, which must equal the host engine's on the same image: the Cortex-M build runs the DSP
/// instructions (`runtime/src/engine/dsp.rs`), the host their portable twins.
#[test]
fn firmware_in_qemu_profile_and_layers_match_the_host_engine() {
    let per_mac = profile_on(M4);
    assert!(per_mac <= 3.0, "{per_mac:.2} instructions per MAC (target ≤ 3)");
}

/// The same firmware built for a Cortex-M3 (thumbv7m: no FPU, so f32 in software, which is
/// exact IEEE arithmetic; no DSP, so the engine's portable twins) computes the same activations,
/// layer by layer, and tract's embedding.
#[test]
fn firmware_on_a_cortex_m3_without_fpu_or_dsp_matches_the_host_engine() {
    let out = run_on(M3, b"", &[]);
    assert!(out.contains("ready: "), "{out}");
    let per_mac = profile_on(M3);
    eprintln!("Cortex-M3: {per_mac:.2} instructions per MAC");
}

/// Runs the firmware on `core` under `-icount`, checks its layers' CRCs against the host engine
/// and its embedding against tract, prints its profile; returns instructions per MAC.
fn profile_on(core: Core) -> f64 {
    let out = run_on(core, b"", &["-icount", "shift=0"]);
    let line = out.lines().find_map(|l| l.strip_prefix("embedding: ")).unwrap_or_else(|| panic!("no embedding line in:\n{out}"));
    let got: Vec<i8> = line.split(',').map(|v| v.trim().parse().unwrap()).collect();
    let field = |name: &str| out.lines().find_map(|l| l.strip_prefix(name)).unwrap_or_else(|| panic!("no {name} line in:\n{out}")).to_string();
    let blob = std::fs::read(data("encoder.blob")).unwrap();
    let model = dim_runtime::engine::Model::parse(&blob).unwrap();
    let rgb: dim_runtime::Rgb32 = std::fs::read(data("golden.rgb")).unwrap().try_into().unwrap();
    let (mut arena, mut y) = (vec![0u8; model.arena_size()], vec![0f32; model.dim()]);
    let mut crcs = Vec::new();
    model.run_observed(&rgb, &mut arena, &mut y, |_, a| crcs.push(format!("{:08x}", dim_runtime::engine::blob::checksum(a)))).unwrap();
    assert_eq!(field("layers: "), crcs.join(","), "the firmware's activations differ from the host engine's");

    // Multiply-accumulates per layer, in the profile's order: image, conv1..3, (pool), fc, y.
    let conv = |c: &dim_runtime::engine::blob::Conv| c.out * c.out_side * c.out_side * c.inp * c.kernel * c.kernel;
    let mut macs: Vec<(&str, usize)> = vec![("image", 0), ("conv1", conv(&model.convs[0])), ("conv2", conv(&model.convs[1])), ("conv3", conv(&model.convs[2]))];
    if model.pool_scale.is_some() {
        macs.push(("pool", 0));
    }
    macs.extend([("fc", conv(&model.fc)), ("y", model.y.inp * model.y.out)]);
    let ticks: Vec<u64> = field("profile: ").split(',').map(|t| t.trim().parse().unwrap()).collect();
    assert_eq!(ticks.len(), macs.len(), "{out}");
    let insns: Vec<u64> = ticks.iter().map(|t| 40 * t).collect();
    let (total, all_macs) = (insns.iter().sum::<u64>(), macs.iter().map(|m| m.1).sum::<usize>());
    for ((name, m), i) in macs.iter().zip(&insns) {
        let per = if *m > 0 { format!("{:.2} per MAC", *i as f64 / *m as f64) } else { String::new() };
        eprintln!("{name:>6}: {i:>10} instructions, {m:>8} MACs {per}");
    }
    let per_mac = total as f64 / all_macs as f64;
    eprintln!(" total: {total:>10} instructions, {all_macs:>8} MACs {per_mac:.2} per MAC ({})", core.cpu);
    // The engine's int8 embedding, as tract computes it for the same image and model.
    let mut want = vec![0i8; y.len()];
    let int8 = std::fs::read(data("encoder.int8.onnx")).unwrap();
    let mut input = vec![0f32; dim_runtime::INPUT_LEN];
    dim_runtime::preprocess::rgb32_to_input(&rgb, &mut input).unwrap();
    let tract = dim_runtime::Encoder::from_bytes_as_written(&int8).unwrap().embed_preprocessed(&input).unwrap();
    model.quantize_output(&tract, &mut want);
    assert_eq!(got, want, "{}: the firmware's embedding differs from tract's", core.cpu);
    per_mac
}

/// Runs the STM32F405 board firmware (ST's HAL, `firmware/src/bin/stm32f405.rs`) on QEMU's
/// `netduinoplus2` with USART1 on QEMU's standard input and output. Once it says `ready:`, sends
/// `input` and reads until `answers` lines have come back after `ready:` (the firmware serves
/// forever, so QEMU is stopped then); returns everything it printed.
fn run_stm32f405(input: &[u8], answers: usize) -> String {
    use std::io::{BufRead, Write};
    let elf = build_firmware("thumbv7em-none-eabihf", &["--no-default-features", "--features", "board-stm32f405"], "dim-firmware-stm32f405");
    let mut child = Command::new("timeout")
        .args(["300", "qemu-system-arm", "-machine", "netduinoplus2", "-display", "none", "-monitor", "none", "-serial", "stdio", "-kernel"])
        .arg(elf)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (mut stdin, stdout) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
    let (mut all, mut after_ready) = (String::new(), None::<usize>);
    for line in std::io::BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        all += &line;
        all.push('\n');
        match after_ready {
            // Bytes sent before the firmware enables its receiver are dropped by QEMU's USART.
            None if line.starts_with("ready: ") => {
                stdin.write_all(input).unwrap();
                stdin.flush().unwrap();
                after_ready = Some(0);
            }
            Some(n) => after_ready = Some(n + 1),
            None => {}
        }
        if after_ready == Some(answers) {
            break;
        }
    }
    // SIGTERM, not `Child::kill`'s SIGKILL: the child is `timeout`, which relays a TERM to QEMU
    // and exits; killed outright it would leave QEMU running, orphaned, a core busy for good.
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    assert_eq!(after_ready, Some(answers), "QEMU netduinoplus2 stopped early:\n{all}");
    all
}

/// The firmware on an STM32F405 through ST's HAL, over its USART: it starts from the shipped
/// blob and prototypes in flash, prints tract's embedding of the golden image, answers frames
/// with the host engine's embeddings and the host store's classifications, and answers every
/// hostile line — too long, not hex, half a frame, not UTF-8, unknown — with an error line and
/// goes on serving (the session still holds the last good frame).
#[test]
fn firmware_on_stm32f405_over_usart_matches_the_host_and_survives_hostile_lines() {
    use dim_runtime::PrototypeStore;
    use dim_runtime::prototypes::file::PrototypeFile;
    let rgb = std::fs::read(data("golden-set.rgb")).unwrap();
    let frames: Vec<&[u8]> = rgb.chunks_exact(dim_runtime::RGB32_LEN).take(4).collect();
    let hex = |b: &[u8]| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let mut script = Vec::new();
    for f in &frames {
        script.extend(format!("frame {}\nembed\nclassify\n", hex(f)).bytes());
    }
    script.extend("x".repeat(7000).bytes());
    script.extend(b"\nframe ");
    script.extend("zz".repeat(dim_runtime::RGB32_LEN).bytes());
    script.extend(format!("\nframe {}\n", hex(&frames[0][..dim_runtime::RGB32_LEN / 2])).bytes());
    script.extend(b"\xff\xfe\nlaunch\nembed\n");
    let out = run_stm32f405(&script, 3 * frames.len() + 6);

    assert!(out.starts_with("dim-firmware on STM32F405: sysclk 16000000 Hz\n"), "{out}");
    let parse = |line: &str| -> Vec<i8> {
        line.strip_prefix("embedding: ").unwrap_or_else(|| panic!("not an embedding: {line}")).split(',').map(|v| v.parse().unwrap()).collect()
    };
    let start = out.lines().nth(1).unwrap();
    let want = tracts_golden_embedding();
    let worst = parse(start).iter().zip(&want).map(|(a, b)| (*a as i32 - *b as i32).abs()).max().unwrap();
    assert!(worst <= 1, "firmware {start}\ntract    {want:?}");

    let blob = std::fs::read(data("encoder.blob")).unwrap();
    let model = dim_runtime::engine::Model::parse(&blob).unwrap();
    let protos_bytes = std::fs::read(data("prototypes.bin")).unwrap();
    let protos = PrototypeFile::parse(&protos_bytes).unwrap();
    let names: Vec<&str> = protos.label_names().collect();
    let mut store = PrototypeStore::<64, 64>::new();
    protos.load_into(&mut store).unwrap();
    let host = |f: &[u8]| -> [i8; 64] {
        let (mut arena, mut y, mut q) = (vec![0u8; model.arena_size()], [0f32; 64], [0i8; 64]);
        model.run(f.try_into().unwrap(), &mut arena, &mut y).unwrap();
        model.quantize_output(&y, &mut q);
        q
    };
    let answers: Vec<&str> = out.lines().skip_while(|l| !l.starts_with("ready: ")).skip(1).collect();
    for (i, a) in answers.chunks(3).take(frames.len()).enumerate() {
        let y = host(frames[i]);
        assert_eq!((a[0], parse(a[1])), ("frame ok", y.to_vec()), "frame {i}");
        let m = store.nearest(&y).unwrap();
        let name = names[m.label as usize];
        let want = if m.novelty > protos.threshold {
            format!("novel novelty {:.4} nearest {name}", m.novelty)
        } else {
            format!("class {name} similarity {:.4} novelty {:.4}", m.similarity, m.novelty)
        };
        assert_eq!(a[2], want, "frame {i}");
    }
    let hostile = &answers[3 * frames.len()..];
    assert_eq!(hostile[0], "error: the line is too long");
    assert_eq!(hostile[1], "error: the frame holds a character that is not a hex digit");
    assert_eq!(hostile[2], format!("error: a frame is {} hex digits (32×32 RGB), got {}", 2 * dim_runtime::RGB32_LEN, dim_runtime::RGB32_LEN));
    assert_eq!(hostile[3], "error: the line is not UTF-8");
    assert!(hostile[4].starts_with("error: unknown command \"launch\""), "{}", hostile[4]);
    assert_eq!(parse(hostile[5]), host(frames[frames.len() - 1]).to_vec(), "the last good frame is kept");
}
