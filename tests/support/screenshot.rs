//! Whether a screenshot shows anything: decodes the PNG and looks for pixels that differ
//! from the first one.

/// True when fewer than 1 % of the pixels differ from the top-left one (a blank page).
pub fn is_blank(bytes: &[u8]) -> bool {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("a decodable size")];
    let info = reader.next_frame(&mut buf).expect("a PNG frame");
    let data = &buf[..info.buffer_size()];
    let px = info.color_type.samples() * usize::from(info.bit_depth as u8).div_ceil(8);
    let first = &data[..px];
    let total = data.len() / px;
    let differing = data.chunks_exact(px).filter(|p| p != &first).count();
    differing * 100 < total
}
