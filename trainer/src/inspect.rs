//! `trainer inspect MODEL`: what an encoder file holds, layer by layer, and what a device needs to
//! run it.
//!
//! - ONNX (f32 or int8): the graph as tract compiles it for one image; a row per compute node
//!   (convolution, matrix product, pooling) with its output shape, weight elements, multiply-adds
//!   and output bytes. Totals count every constant of the file.
//! - Engine blob: a row per layer as the no_std engine runs it, the arena it needs, and the
//!   flash (the blob) and RAM (arena, input image, output) of a Cortex-M build, and whether the
//!   firmware with it fits the chips it is built for ([`CHIPS`]).

use anyhow::Context;
use std::path::Path;
use tract_onnx::prelude::*;

/// One row of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerRow {
    pub name: String,
    pub op: String,
    /// Output shape for one image.
    pub output: Vec<usize>,
    /// Elements of the layer's weight tensor.
    pub weights: usize,
    pub macs: usize,
    /// Bytes of the layer's output.
    pub activation_bytes: usize,
}

/// What `inspect` found.
#[derive(Debug, Clone, PartialEq)]
pub struct Inspection {
    pub kind: &'static str,
    pub rows: Vec<LayerRow>,
    /// Elements and bytes of every constant (weights, biases, scales).
    pub constants: usize,
    pub constant_bytes: usize,
    pub macs: usize,
    pub file_bytes: usize,
    /// The engine's arena (blobs only).
    pub arena: Option<usize>,
}

/// Reads `path` by its extension: `.onnx` or `.blob`.
pub fn inspect(path: &Path) -> anyhow::Result<Inspection> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    match path.extension().and_then(|e| e.to_str()) {
        Some("blob") => blob(&bytes).with_context(|| format!("{}: not a usable engine blob", path.display())),
        Some("onnx") => onnx(&bytes).with_context(|| format!("{}: not a usable ONNX encoder", path.display())),
        _ => anyhow::bail!("{}: expected an .onnx or .blob file", path.display()),
    }
}

fn onnx(bytes: &[u8]) -> anyhow::Result<Inspection> {
    let model = tract_onnx::onnx().model_for_read(&mut &bytes[..])?.with_input_fact(0, f32::fact([1, 3, 32, 32]).into())?.into_typed()?;
    let (mut rows, mut constants, mut constant_bytes) = (Vec::new(), 0, 0);
    for node in model.nodes() {
        let fact = &node.outputs[0].fact;
        if let Some(k) = &fact.konst {
            // Scalars and single values are graph plumbing (zero points, casts), not parameters.
            if k.len() > 1 {
                constants += k.len();
                constant_bytes += k.len() * k.datum_type().size_of();
            }
            continue;
        }
        let op = node.op().name().to_string();
        let compute = op == "Conv" || op.starts_with("EinSum") || op.starts_with("MatMul") || op.starts_with("Reduce");
        if !compute {
            continue;
        }
        let output: Vec<usize> = fact.shape.as_concrete().map(|s| s.to_vec()).unwrap_or_default();
        let weights =
            node.inputs.iter().filter_map(|i| model.outlet_fact(*i).ok()?.konst.clone()).filter(|k| k.rank() >= 2).map(|k| k.len()).max().unwrap_or(0);
        // Each output value takes one weight per input it sums: weights × positions per channel.
        let positions = if output.len() >= 2 && output[1] > 0 { output.iter().product::<usize>() / output[1] } else { 0 };
        let activation_bytes = output.iter().product::<usize>() * fact.datum_type.size_of();
        rows.push(LayerRow { name: node.name.clone(), op, output, weights, macs: weights * positions, activation_bytes });
    }
    let macs = rows.iter().map(|r| r.macs).sum();
    Ok(Inspection { kind: "ONNX", rows, constants, constant_bytes, macs, file_bytes: bytes.len(), arena: None })
}

fn blob(bytes: &[u8]) -> anyhow::Result<Inspection> {
    let m = dim_runtime::engine::Model::parse(bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut rows = Vec::new();
    let conv = |name: &str, c: &dim_runtime::engine::blob::Conv| {
        let weights = c.out * c.inp * c.kernel * c.kernel;
        let positions = c.out_side * c.out_side;
        LayerRow {
            name: name.into(),
            op: format!("conv {}×{}/{} (uint8)", c.kernel, c.kernel, c.stride),
            output: vec![c.out, c.out_side, c.out_side],
            weights,
            macs: weights * positions,
            activation_bytes: c.out * positions,
        }
    };
    for (i, c) in m.convs.iter().enumerate() {
        rows.push(conv(&format!("conv{}", i + 1), c));
    }
    if m.pool_scale.is_some() {
        let c = &m.convs[2];
        rows.push(LayerRow { name: "pool".into(), op: "global average pool".into(), output: vec![c.out], weights: 0, macs: 0, activation_bytes: c.out });
    }
    rows.push(conv("fc", &m.fc));
    rows.push(LayerRow {
        name: "y".into(),
        op: "dense (f32 out)".into(),
        output: vec![m.y.out],
        weights: m.y.inp * m.y.out,
        macs: m.y.inp * m.y.out,
        activation_bytes: 4 * m.y.out,
    });
    let per_conv = |c: &dim_runtime::engine::blob::Conv| c.out * c.inp * c.kernel * c.kernel + 2 * c.out;
    let constants = m.convs.iter().chain([&m.fc]).map(per_conv).sum::<usize>() + m.y.inp * m.y.out + 2 * m.y.out;
    let macs = rows.iter().map(|r| r.macs).sum();
    Ok(Inspection { kind: "engine blob", rows, constants, constant_bytes: bytes.len(), macs, file_bytes: bytes.len(), arena: Some(m.arena_size()) })
}

/// A microcontroller the firmware is built for: its flash and RAM.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Chip {
    pub name: &'static str,
    pub flash: usize,
    pub ram: usize,
}

/// The chips `firmware/` builds for (their memory maps are `firmware/memory-*.x`).
pub const CHIPS: [Chip; 2] = [
    Chip { name: "STM32F405 (firmware --features board-stm32f405; QEMU netduinoplus2)", flash: 1024 * 1024, ram: 128 * 1024 },
    Chip { name: "STM32H743 (firmware --features board-nucleo-h743-hal; 128 KiB DTCM)", flash: 2048 * 1024, ram: 128 * 1024 },
];

/// Flash the STM32F405 firmware takes besides the blob: its code and constants, 64 KiB
/// (`readelf -S` of the release build: 188 KiB of `.vector_table`, `.text` and `.rodata`, of which
/// 121 KiB are the tiny blob and 3 KiB its golden image).
pub const FIRMWARE_FLASH: usize = 64 * 1024;
/// RAM the firmware takes besides the engine's arena: the 6,200-byte command line buffer, the
/// session (64 prototypes of 64 values, 16 labels, the 3,072-byte frame) and the call stack. An
/// allowance, not a measurement of the stack's depth.
pub const FIRMWARE_RAM: usize = 24 * 1024;

/// Whether the firmware running a blob of `blob` bytes with an arena of `arena` bytes fits `chip`.
pub fn fits(chip: &Chip, blob: usize, arena: usize) -> bool {
    blob + FIRMWARE_FLASH <= chip.flash && arena + FIRMWARE_RAM <= chip.ram
}

/// The report as Markdown: the table, the totals and what a device needs.
pub fn table(i: &Inspection) -> String {
    let mut s = String::from("| layer | op | output | weights | MAC | output bytes |\n|---|---|---|---|---|---|\n");
    for r in &i.rows {
        s += &format!("| {} | {} | {:?} | {} | {} | {} |\n", r.name, r.op, r.output, r.weights, r.macs, r.activation_bytes);
    }
    s += &format!("\n{}: {} bytes; {} constants ({} bytes); {} multiply-adds per image", i.kind, i.file_bytes, i.constants, i.constant_bytes, i.macs);
    let largest = i.rows.iter().map(|r| r.activation_bytes).max().unwrap_or(0);
    match i.arena {
        Some(arena) => {
            let ram = arena + dim_runtime::RGB32_LEN + i.rows.last().map_or(0, |r| r.activation_bytes);
            s += &format!(
                "\nCortex-M: flash {} bytes for the blob (plus the engine's code); RAM {ram} bytes = arena {arena} + input image {} + y {} (plus stack)",
                i.file_bytes,
                dim_runtime::RGB32_LEN,
                i.rows.last().map_or(0, |r| r.activation_bytes)
            );
            for chip in &CHIPS {
                let verdict = if fits(chip, i.file_bytes, arena) { "fits" } else { "does NOT fit" };
                s += &format!(
                    "\n{}: {verdict} (flash {} of {} KiB: blob + {} KiB of firmware; RAM {} of {} KiB: arena + {} KiB of buffers and stack)",
                    chip.name,
                    (i.file_bytes + FIRMWARE_FLASH).div_ceil(1024),
                    chip.flash / 1024,
                    FIRMWARE_FLASH / 1024,
                    (arena + FIRMWARE_RAM).div_ceil(1024),
                    chip.ram / 1024,
                    FIRMWARE_RAM / 1024
                );
            }
        }
        None => s += &format!("\nlargest activation: {largest} bytes; for a microcontroller, inspect the engine blob (`trainer quantize --blob`)"),
    }
    s + "\n"
}
