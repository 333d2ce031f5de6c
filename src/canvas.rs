//! The server-side raster of one room's canvas: the picture the room's accepted operations make.
//!
//! This module owns drawing segments and clears onto a room-sized RGBA pixmap exactly the way the
//! browser's master canvas does (`frontend/board.js`, `paint`: round caps and joins, `lineWidth` =
//! size, anti-aliased, the eraser as `destination-out`, a zero-length segment as a filled circle of
//! radius size/2, transparent background), and converting that pixmap to and from PNG. It is pure
//! (no actors, no I/O). It must never panic on a segment or on PNG bytes, never allocate more than a
//! bounded amount for a PNG it is handed, and never do whole-canvas work when drawing one segment.

use std::fmt;
use std::io::{Cursor, Write};

use tiny_skia::{
    BlendMode, Color, FillRule, LineCap, LineJoin, Paint, PathBuilder, Pixmap, Shader, Stroke,
    Transform,
};

use crate::lettering::text_path;
use crate::protocol::{CanvasSize, Segment, Shape, StrokeId, Text, Tool, MAX_CANVAS_SIDE_PX};
use crate::shapes::{self, Outline};

/// The largest side of a PNG that [`Canvas::decode_png`] will look at.
pub const MAX_PNG_SIDE_PX: u32 = 16_384;
/// The most memory decoding one PNG may take: the decoder's own buffers, and the whole decoded
/// image (8-bit samples), which bounds the decoding time too.
pub const MAX_PNG_DECODE_BYTES: usize = 256 * 1024 * 1024;

/// One accepted operation on a room's canvas, in the order the room accepted it.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Draw(Segment),
    /// A line, rectangle, ellipse or arrow: a stroke in one operation.
    Shape(Shape),
    /// One line of text: a stroke in one operation.
    Text(Text),
    /// With a stroke id, an undoable clear.
    Clear(Option<StrokeId>),
    /// Hides a stroke (see `history`); draws nothing itself.
    Undo(StrokeId),
    /// Shows an undone stroke again; draws nothing itself.
    Redo(StrokeId),
}

impl Op {
    /// The stroke a draw or clear belongs to.
    pub fn stroke_id(&self) -> Option<&str> {
        match self {
            Op::Draw(segment) => segment.stroke_id.as_deref(),
            Op::Shape(shape) => Some(&shape.stroke_id),
            Op::Text(text) => Some(&text.stroke_id),
            Op::Clear(id) => id.as_deref(),
            Op::Undo(_) | Op::Redo(_) => None,
        }
    }

    /// The `type` of its message, for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Draw(_) => "draw",
            Op::Shape(_) => "shape",
            Op::Text(_) => "text",
            Op::Clear(_) => "clear",
            Op::Undo(_) => "undo",
            Op::Redo(_) => "redo",
        }
    }
}

/// Why a PNG could not be turned into a canvas.
#[derive(Debug)]
pub enum CanvasError {
    /// The bytes are not a PNG the decoder can read (bad signature, broken header or chunks).
    NotPng(String),
    /// The PNG's header is readable but its pixel data does not decode (truncated, bad checksum,
    /// broken compressed stream).
    Corrupt(String),
    /// The PNG is larger than this server will decode.
    TooLarge { width: u32, height: u32 },
    /// A pixel format the decoder cannot turn into 8-bit samples.
    Unsupported(String),
}

impl fmt::Display for CanvasError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CanvasError::NotPng(why) => write!(f, "not a readable PNG image: {why}"),
            CanvasError::Corrupt(why) => write!(f, "the PNG's pixel data does not decode: {why}"),
            CanvasError::TooLarge { width, height } => write!(
                f,
                "the PNG is {width}x{height}, larger than this server decodes (at most \
                 {MAX_PNG_SIDE_PX} px a side and {} MiB of pixels)",
                MAX_PNG_DECODE_BYTES / (1024 * 1024)
            ),
            CanvasError::Unsupported(what) => write!(f, "unsupported PNG pixel format: {what}"),
        }
    }
}

impl std::error::Error for CanvasError {}

/// One room's picture: premultiplied RGBA, exactly the room's logical size, transparent where
/// nothing was drawn or where it was erased.
#[derive(Clone)]
pub struct Canvas {
    pixmap: Pixmap,
    /// True only when every pixel is transparent (false may be conservative).
    blank: bool,
    /// The last path's storage, reused so drawing a segment does not allocate a new one.
    scratch: PathBuilder,
}

impl fmt::Debug for Canvas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Canvas")
            .field("width", &self.pixmap.width())
            .field("height", &self.pixmap.height())
            .field("blank", &self.blank)
            .finish()
    }
}

impl Canvas {
    /// A transparent canvas of `size`. Sides outside 1..=[`MAX_CANVAS_SIDE_PX`] are clamped into
    /// it (the configuration never passes one), so [`Canvas::size`] is then the clamped size.
    pub fn blank(size: CanvasSize) -> Canvas {
        let width = size.width.clamp(1, MAX_CANVAS_SIDE_PX);
        let height = size.height.clamp(1, MAX_CANVAS_SIDE_PX);
        let pixmap = Pixmap::new(width, height)
            .expect("a pixmap with sides clamped to 1..=8192 always has a valid size");
        Canvas {
            pixmap,
            blank: true,
            scratch: PathBuilder::new(),
        }
    }

    pub fn size(&self) -> CanvasSize {
        CanvasSize {
            width: self.pixmap.width(),
            height: self.pixmap.height(),
        }
    }

    pub fn apply(&mut self, op: &Op) {
        match op {
            Op::Draw(segment) => self.draw(segment),
            Op::Shape(shape) => self.draw_shape(shape),
            Op::Text(text) => self.draw_text(text),
            Op::Clear(_) => self.clear(),
            // Visibility is the caller's business (`picture::render`).
            Op::Undo(_) | Op::Redo(_) => {}
        }
    }

    /// Draws one segment as the browser does. A segment that cannot be drawn (a size that is not a
    /// positive finite number, coordinates that make no path) is skipped; so is an eraser stroke on
    /// a blank canvas, which would change nothing.
    pub fn draw(&mut self, segment: &Segment) {
        let size = segment.size;
        if !(size.is_finite() && size > 0.0) {
            return;
        }
        let erasing = segment.tool == Tool::Eraser;
        if erasing && self.blank {
            return;
        }
        if !self.touches(segment) {
            // Nothing of it lands on the canvas, anti-aliasing included.
            return;
        }

        let (r, g, b) = parse_hex_color(&segment.color).unwrap_or((0, 0, 0));
        let paint = Paint {
            shader: Shader::SolidColor(if erasing {
                Color::BLACK
            } else {
                Color::from_rgba8(r, g, b, 255)
            }),
            blend_mode: if erasing {
                BlendMode::DestinationOut
            } else {
                BlendMode::SourceOver
            },
            anti_alias: true,
            ..Paint::default()
        };

        let (x0, y0) = (segment.start_x as f32, segment.start_y as f32);
        let (x1, y1) = (segment.end_x as f32, segment.end_y as f32);
        let width = size as f32;
        let mut builder = std::mem::take(&mut self.scratch);
        builder.clear();
        // Compared as the page compares them (`===` on the decoded numbers), before rounding.
        let dot = segment.start_x == segment.end_x && segment.start_y == segment.end_y;
        if dot {
            builder.push_circle(x0, y0, width / 2.0);
        } else {
            builder.move_to(x0, y0);
            builder.line_to(x1, y1);
        }
        let Some(path) = builder.finish() else {
            // Not finite in f32: nothing the browser would draw either.
            return;
        };
        if dot {
            self.pixmap.fill_path(
                &path,
                &paint,
                FillRule::Winding,
                Transform::identity(),
                None,
            );
        } else {
            let stroke = Stroke {
                width,
                line_cap: LineCap::Round,
                line_join: LineJoin::Round,
                ..Stroke::default()
            };
            self.pixmap
                .stroke_path(&path, &paint, &stroke, Transform::identity(), None);
        }
        self.scratch = path.clear();
        if !erasing {
            self.blank = false;
        }
    }

    /// Draws a shape as the page does: its fill (rect and ellipse), then its outline with round
    /// caps and joins.
    pub fn draw_shape(&mut self, shape: &Shape) {
        let width = shape.size as f32;
        if !(width.is_finite() && width > 0.0) {
            return;
        }
        let color = solid_paint(&shape.color);
        match shapes::outline(shape) {
            None => return,
            Some(Outline::Dot { x, y, radius }) => {
                let Some(dot) = PathBuilder::from_circle(x, y, radius) else {
                    return;
                };
                self.pixmap
                    .fill_path(&dot, &color, FillRule::Winding, Transform::identity(), None);
            }
            Some(Outline::Path { path, closed }) => {
                if let (true, Some(fill)) = (closed, shape.fill.as_deref()) {
                    self.pixmap.fill_path(
                        &path,
                        &solid_paint(fill),
                        FillRule::Winding,
                        Transform::identity(),
                        None,
                    );
                }
                let stroke = Stroke {
                    width,
                    line_cap: LineCap::Round,
                    line_join: LineJoin::Round,
                    ..Stroke::default()
                };
                self.pixmap
                    .stroke_path(&path, &color, &stroke, Transform::identity(), None);
            }
        }
        self.blank = false;
    }

    /// Draws a line of text in the shipped font (see `lettering`).
    pub fn draw_text(&mut self, text: &Text) {
        let Some(path) = text_path(text, self.pixmap.width() as f32) else {
            return;
        };
        self.pixmap.fill_path(
            &path,
            &solid_paint(&text.color),
            FillRule::Winding,
            Transform::identity(),
            None,
        );
        self.blank = false;
    }

    /// Whether any pixel could get coverage from `segment`: its bounding box, grown by half the
    /// line width and a pixel for anti-aliasing, meets the canvas.
    fn touches(&self, segment: &Segment) -> bool {
        let reach = segment.size / 2.0 + 1.0;
        let left = segment.start_x.min(segment.end_x) - reach;
        let right = segment.start_x.max(segment.end_x) + reach;
        let top = segment.start_y.min(segment.end_y) - reach;
        let bottom = segment.start_y.max(segment.end_y) + reach;
        // Written so that NaN anywhere answers false.
        right > 0.0
            && bottom > 0.0
            && left < f64::from(self.pixmap.width())
            && top < f64::from(self.pixmap.height())
    }

    /// Clears everything to transparent (`clearRect` of the whole canvas).
    pub fn clear(&mut self) {
        if !self.blank {
            self.pixmap.fill(Color::TRANSPARENT);
            self.blank = true;
        }
    }

    /// True when nothing visible is on the canvas; O(1). May answer false for a canvas whose
    /// strokes were all erased again.
    pub fn is_blank(&self) -> bool {
        self.blank
    }

    /// The picture as a PNG: 8-bit straight-alpha RGBA, exactly the room's size, fast compression.
    ///
    /// Encoding into memory cannot fail for a valid pixmap; if it ever did, the failure is logged
    /// and the result is empty (which no decoder accepts) rather than a panic in the room.
    pub fn encode_png(&self) -> Vec<u8> {
        self.encode(png::ColorType::Rgba, |src, dst| {
            dst.copy_from_slice(src);
            for px in dst.chunks_exact_mut(4) {
                let a = px[3];
                // Opaque pixels are already straight; transparent ones are all zeros.
                if a != 0 && a != 255 {
                    for c in &mut px[..3] {
                        *c = demultiply(*c, a);
                    }
                }
            }
        })
    }

    /// The picture composited over opaque white, as an RGB PNG (for export).
    pub fn encode_png_on_white(&self) -> Vec<u8> {
        self.encode(png::ColorType::Rgb, |src, dst| {
            for (px, out) in src.chunks_exact(4).zip(dst.chunks_exact_mut(3)) {
                // Premultiplied source over white: c + 255 * (1 - a), exact in integers.
                let under = 255 - px[3];
                out[0] = px[0].saturating_add(under);
                out[1] = px[1].saturating_add(under);
                out[2] = px[2].saturating_add(under);
            }
        })
    }

    /// Encodes the pixmap row by row, `convert` turning each premultiplied RGBA row into a row of
    /// `color` samples, so no whole-picture copy is made.
    fn encode(&self, color: png::ColorType, convert: impl Fn(&[u8], &mut [u8])) -> Vec<u8> {
        let (width, height) = (self.pixmap.width(), self.pixmap.height());
        let src_stride = width as usize * 4;
        let mut row = vec![0; width as usize * color.samples()];
        let mut out = Vec::with_capacity(64 * 1024);
        let result = (|| {
            let mut encoder = png::Encoder::new(&mut out, width, height);
            encoder.set_color(color);
            encoder.set_depth(png::BitDepth::Eight);
            // fdeflate with the Up filter: on a busy 1600x900 canvas about twice as fast as
            // `Compression::Fast`'s adaptive filter, for a file a few per cent larger.
            encoder.set_deflate_compression(png::DeflateCompression::FdeflateUltraFast);
            encoder.set_filter(png::Filter::Up);
            let mut writer = encoder.write_header()?;
            {
                let mut stream = writer.stream_writer_with_size(256 * 1024)?;
                for src in self.pixmap.data().chunks_exact(src_stride) {
                    convert(src, &mut row);
                    stream.write_all(&row)?;
                }
                stream.finish()?;
            }
            writer.finish()
        })();
        match result {
            Ok(()) => out,
            Err(e) => {
                log::error!("encoding a {width}x{height} canvas as PNG failed: {e}");
                Vec::new()
            }
        }
    }

    /// Rebuilds a canvas of `size` from a PNG (one made by [`Canvas::encode_png`], or a browser's
    /// `canvas.toDataURL()`). A PNG of another size is drawn at the top-left, cropped or padded with
    /// transparency. Any bit depth and colour type is accepted. Memory and time are bounded by
    /// [`MAX_PNG_SIDE_PX`] and [`MAX_PNG_DECODE_BYTES`]; undecodable input is an error, never a
    /// panic.
    pub fn decode_png(bytes: &[u8], size: CanvasSize) -> Result<Canvas, CanvasError> {
        let limits = png::Limits {
            bytes: MAX_PNG_DECODE_BYTES,
        };
        let mut decoder = png::Decoder::new_with_limits(Cursor::new(bytes), limits);
        decoder.set_transformations(png::Transformations::normalize_to_color8());
        let header = decoder
            .read_header_info()
            .map_err(|e| CanvasError::NotPng(e.to_string()))?;
        let (png_width, png_height) = header.size();
        let too_large = CanvasError::TooLarge {
            width: png_width,
            height: png_height,
        };
        if png_width > MAX_PNG_SIDE_PX || png_height > MAX_PNG_SIDE_PX {
            return Err(too_large);
        }
        let mut reader = decoder.read_info().map_err(|e| match e {
            png::DecodingError::LimitsExceeded => CanvasError::TooLarge {
                width: png_width,
                height: png_height,
            },
            e => CanvasError::NotPng(e.to_string()),
        })?;
        match reader.output_buffer_size() {
            Some(bytes) if bytes <= MAX_PNG_DECODE_BYTES => {}
            _ => return Err(too_large),
        }
        let (color, depth) = reader.output_color_type();
        let channels = match (color, depth) {
            (png::ColorType::Grayscale, png::BitDepth::Eight) => 1,
            (png::ColorType::GrayscaleAlpha, png::BitDepth::Eight) => 2,
            (png::ColorType::Rgb, png::BitDepth::Eight) => 3,
            (png::ColorType::Rgba, png::BitDepth::Eight) => 4,
            other => return Err(CanvasError::Unsupported(format!("{other:?}"))),
        };

        let mut canvas = Canvas::blank(size);
        let width = canvas.pixmap.width() as usize;
        let height = canvas.pixmap.height() as usize;
        let mut visible = false;
        {
            let data = canvas.pixmap.data_mut();
            let mut put_row = |y: usize, row: &[u8]| {
                if y >= height {
                    return;
                }
                let dest = &mut data[y * width * 4..(y + 1) * width * 4];
                for (src, dst) in row.chunks_exact(channels).zip(dest.chunks_exact_mut(4)) {
                    let [r, g, b, a] = match *src {
                        [v] => [v, v, v, 255],
                        [v, a] => [v, v, v, a],
                        [r, g, b] => [r, g, b, 255],
                        [r, g, b, a] => [r, g, b, a],
                        _ => [0, 0, 0, 0],
                    };
                    if a != 0 {
                        visible = true;
                        dst.copy_from_slice(&[
                            premultiply(r, a),
                            premultiply(g, a),
                            premultiply(b, a),
                            a,
                        ]);
                    }
                }
            };
            let corrupt = |e: png::DecodingError| CanvasError::Corrupt(e.to_string());
            if reader.info().interlaced {
                // Adam7 rows arrive out of order: decode the whole (bounded) image first.
                let mut buffer = vec![0; reader.output_buffer_size().unwrap_or(0)];
                let frame = reader.next_frame(&mut buffer).map_err(corrupt)?;
                if frame.line_size > 0 {
                    for (y, row) in buffer.chunks_exact(frame.line_size).enumerate() {
                        put_row(y, row);
                    }
                }
            } else {
                // Row by row: memory stays at one row, whatever the PNG's size.
                let mut y = 0;
                while let Some(row) = reader.next_row().map_err(corrupt)? {
                    put_row(y, row.data());
                    y += 1;
                }
            }
        }
        canvas.blank = !visible;
        Ok(canvas)
    }

    /// Straight-alpha RGBA of pixel (x, y); transparent outside the canvas.
    #[cfg(test)]
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 4] {
        // `Pixmap::pixel` only checks the flat index, so x past the width would wrap a row.
        if x >= self.pixmap.width() || y >= self.pixmap.height() {
            return [0, 0, 0, 0];
        }
        match self.pixmap.pixel(x, y) {
            Some(p) => {
                let a = p.alpha();
                if a == 0 || a == 255 {
                    [p.red(), p.green(), p.blue(), a]
                } else {
                    [
                        demultiply(p.red(), a),
                        demultiply(p.green(), a),
                        demultiply(p.blue(), a),
                        a,
                    ]
                }
            }
            None => [0, 0, 0, 0],
        }
    }
}

/// Opaque, anti-aliased paint of `color` (black if unreadable), drawn over what is there.
fn solid_paint(color: &str) -> Paint<'static> {
    let (r, g, b) = parse_hex_color(color).unwrap_or((0, 0, 0));
    Paint {
        shader: Shader::SolidColor(Color::from_rgba8(r, g, b, 255)),
        anti_alias: true,
        ..Paint::default()
    }
}

/// `#rgb` or `#rrggbb` (either case) to its channels; `None` for anything else.
fn parse_hex_color(color: &str) -> Option<(u8, u8, u8)> {
    let hex = color.strip_prefix('#')?;
    let digit = |i: usize| -> Option<u8> {
        let b = *hex.as_bytes().get(i)?;
        (b as char).to_digit(16).map(|d| d as u8)
    };
    match hex.len() {
        3 => Some((digit(0)? * 17, digit(1)? * 17, digit(2)? * 17)),
        6 => Some((
            digit(0)? * 16 + digit(1)?,
            digit(2)? * 16 + digit(3)?,
            digit(4)? * 16 + digit(5)?,
        )),
        _ => None,
    }
}

/// Rounded `c * a / 255`; never more than `a`, so the result is a valid premultiplied channel.
fn premultiply(c: u8, a: u8) -> u8 {
    ((u32::from(c) * u32::from(a) + 127) / 255) as u8
}

/// Rounded `c * 255 / a` for 0 < a, capped at 255 (a premultiplied channel is at most its alpha).
fn demultiply(c: u8, a: u8) -> u8 {
    let a = u32::from(a);
    ((u32::from(c) * 255 + a / 2) / a).min(255) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    const SMALL: CanvasSize = CanvasSize {
        width: 100,
        height: 100,
    };

    fn segment(color: &str, from: (f64, f64), to: (f64, f64), size: f64, tool: Tool) -> Segment {
        Segment {
            color: color.into(),
            start_x: from.0,
            start_y: from.1,
            end_x: to.0,
            end_y: to.1,
            size,
            tool,
            stroke_id: None,
        }
    }

    fn pen(color: &str, from: (f64, f64), to: (f64, f64), size: f64) -> Segment {
        segment(color, from, to, size, Tool::Pen)
    }

    fn eraser(from: (f64, f64), to: (f64, f64), size: f64) -> Segment {
        segment("#000000", from, to, size, Tool::Eraser)
    }

    fn all_transparent(canvas: &Canvas) -> bool {
        canvas.pixmap.data().iter().all(|&b| b == 0)
    }

    const TRANSPARENT: [u8; 4] = [0, 0, 0, 0];

    #[test]
    fn a_pen_stroke_colours_its_centre_opaque_and_leaves_far_pixels_transparent() {
        let mut canvas = Canvas::blank(SMALL);
        canvas.draw(&pen("#1e88e5", (20.0, 50.0), (80.0, 50.0), 10.0));
        for x in [20, 35, 50, 65, 79] {
            assert_eq!(canvas.pixel(x, 50), [0x1e, 0x88, 0xe5, 255], "x={x}");
            assert_eq!(canvas.pixel(x, 46), [0x1e, 0x88, 0xe5, 255], "x={x}");
        }
        for (x, y) in [(50, 40), (50, 60), (50, 80), (5, 5), (95, 95), (50, 0)] {
            assert_eq!(canvas.pixel(x, y), TRANSPARENT, "({x}, {y})");
        }
    }

    #[test]
    fn round_caps_reach_half_the_size_past_the_end_along_the_line() {
        let mut canvas = Canvas::blank(SMALL);
        canvas.draw(&pen("#000000", (40.0, 50.0), (60.0, 50.0), 20.0));
        // Pixel 31 spans 31..32: all of it within 10 px of (40, 50).
        assert_eq!(canvas.pixel(31, 50)[3], 255);
        assert_eq!(canvas.pixel(68, 50)[3], 255);
        // Past size/2 nothing is drawn.
        assert_eq!(canvas.pixel(28, 50), TRANSPARENT);
        assert_eq!(canvas.pixel(71, 50), TRANSPARENT);
        // Round, not square: the corner of a square cap stays empty.
        assert_eq!(canvas.pixel(31, 41), TRANSPARENT);
        assert_eq!(canvas.pixel(68, 58), TRANSPARENT);
    }

    #[test]
    fn a_zero_length_segment_is_a_filled_circle_of_radius_half_the_size() {
        let mut canvas = Canvas::blank(SMALL);
        canvas.draw(&pen("#ff0000", (50.0, 50.0), (50.0, 50.0), 20.0));
        let red = [255, 0, 0, 255];
        for (x, y) in [(50, 50), (57, 50), (42, 50), (50, 57), (50, 42), (55, 55)] {
            assert_eq!(canvas.pixel(x, y), red, "({x}, {y})");
        }
        for (x, y) in [(61, 50), (38, 50), (50, 61), (50, 38), (58, 58), (41, 41)] {
            assert_eq!(canvas.pixel(x, y), TRANSPARENT, "({x}, {y})");
        }
        assert!(!canvas.is_blank());
    }

    #[test]
    fn the_eraser_makes_pixels_transparent_again() {
        let mut canvas = Canvas::blank(SMALL);
        canvas.draw(&pen("#00ff00", (10.0, 50.0), (90.0, 50.0), 30.0));
        canvas.draw(&eraser((50.0, 20.0), (50.0, 80.0), 10.0));
        assert_eq!(canvas.pixel(50, 50), TRANSPARENT);
        assert_eq!(canvas.pixel(50, 40), TRANSPARENT);
        assert_eq!(canvas.pixel(30, 50), [0, 255, 0, 255]);
        assert_eq!(canvas.pixel(70, 50), [0, 255, 0, 255]);
    }

    #[test]
    fn clear_makes_every_pixel_transparent() {
        let mut canvas = Canvas::blank(SMALL);
        canvas.apply(&Op::Draw(pen("#123456", (0.0, 0.0), (100.0, 100.0), 40.0)));
        assert!(!all_transparent(&canvas));
        canvas.apply(&Op::Clear(None));
        assert!(all_transparent(&canvas));
        assert!(canvas.is_blank());
    }

    #[test]
    fn is_blank_follows_pen_strokes_on_the_canvas_and_clears_only() {
        let mut canvas = Canvas::blank(SMALL);
        assert!(canvas.is_blank());
        canvas.draw(&eraser((10.0, 10.0), (90.0, 90.0), 20.0));
        assert!(canvas.is_blank(), "erasing a blank canvas leaves it blank");
        canvas.draw(&pen("#000", (-100.0, -100.0), (-20.0, -5.0), 8.0));
        assert!(canvas.is_blank(), "a stroke wholly outside draws nothing");
        assert!(all_transparent(&canvas));
        canvas.draw(&pen("#000", (-50.0, 10.0), (5.0, 10.0), 2.0));
        assert!(
            !canvas.is_blank(),
            "a stroke reaching into the canvas is visible"
        );
        canvas.clear();
        assert!(canvas.is_blank());
        canvas.draw(&pen("#000", (50.0, 50.0), (50.0, 50.0), 4.0));
        assert!(!canvas.is_blank());
        canvas.draw(&eraser((0.0, 0.0), (100.0, 100.0), 64.0));
        assert!(!canvas.is_blank(), "erasing is answered conservatively");
    }

    #[test]
    fn encode_then_decode_keeps_opaque_and_anti_aliased_pixels_within_one_level() {
        let mut canvas = Canvas::blank(SMALL);
        canvas.draw(&pen("#1e88e5", (3.3, 7.1), (91.7, 60.4), 3.0));
        canvas.draw(&pen("#e53935", (10.0, 90.0), (80.0, 20.0), 7.5));
        canvas.draw(&eraser((0.0, 40.0), (100.0, 45.0), 2.5));
        let (mut opaque, mut partial) = (0, 0);
        for y in 0..100 {
            for x in 0..100 {
                match canvas.pixel(x, y)[3] {
                    0 => {}
                    255 => opaque += 1,
                    _ => partial += 1,
                }
            }
        }
        assert!(
            opaque > 100 && partial > 100,
            "{opaque} opaque, {partial} partial"
        );

        let png = canvas.encode_png();
        let decoded = Canvas::decode_png(&png, SMALL).unwrap();
        assert_eq!(decoded.size(), SMALL);
        assert!(!decoded.is_blank());
        for y in 0..100 {
            for x in 0..100 {
                let (a, b) = (canvas.pixel(x, y), decoded.pixel(x, y));
                assert!(
                    a.iter().zip(b).all(|(&a, b)| a.abs_diff(b) <= 1),
                    "({x}, {y}): {a:?} became {b:?}"
                );
            }
        }
    }

    #[test]
    fn the_encoded_png_is_straight_alpha_rgba_of_the_room_size() {
        let mut canvas = Canvas::blank(CanvasSize {
            width: 30,
            height: 20,
        });
        canvas.draw(&pen("#ff8000", (0.0, 10.0), (30.0, 10.0), 3.0));
        let png = canvas.encode_png();
        let mut reader = png::Decoder::new(Cursor::new(&png)).read_info().unwrap();
        let mut buffer = vec![0; reader.output_buffer_size().unwrap()];
        let frame = reader.next_frame(&mut buffer).unwrap();
        assert_eq!((frame.width, frame.height), (30, 20));
        assert_eq!(
            (frame.color_type, frame.bit_depth),
            (png::ColorType::Rgba, png::BitDepth::Eight)
        );
        let at = |x: usize, y: usize| &buffer[(y * 30 + x) * 4..][..4];
        assert_eq!(at(15, 10), [255, 128, 0, 255]);
        assert_eq!(at(15, 0), [0, 0, 0, 0]);
        // An anti-aliased edge keeps the stroke's colour, not a darkened premultiplied one.
        let edge = at(15, 8);
        assert!(edge[3] > 0 && edge[3] < 255, "{edge:?}");
        assert!(edge[0] >= 254 && edge[1].abs_diff(128) <= 2, "{edge:?}");
    }

    #[test]
    fn the_export_on_white_shows_white_where_nothing_is_drawn() {
        let mut canvas = Canvas::blank(CanvasSize {
            width: 20,
            height: 20,
        });
        canvas.draw(&pen("#000080", (0.0, 10.0), (20.0, 10.0), 4.0));
        let png = canvas.encode_png_on_white();
        let mut reader = png::Decoder::new(Cursor::new(&png)).read_info().unwrap();
        let mut buffer = vec![0; reader.output_buffer_size().unwrap()];
        let frame = reader.next_frame(&mut buffer).unwrap();
        assert_eq!(frame.color_type, png::ColorType::Rgb);
        let at = |x: usize, y: usize| &buffer[(y * 20 + x) * 3..][..3];
        assert_eq!(at(10, 10), [0, 0, 128]);
        assert_eq!(at(10, 2), [255, 255, 255]);
    }

    #[test]
    fn garbage_is_not_decoded() {
        let valid = {
            let mut canvas = Canvas::blank(SMALL);
            canvas.draw(&pen("#000", (0.0, 0.0), (100.0, 100.0), 10.0));
            canvas.encode_png()
        };
        let mut wrong_crc = valid.clone();
        wrong_crc[29] ^= 0xff; // inside IHDR's checksum
        let inputs: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("text", b"definitely not a png".to_vec()),
            ("signature only", valid[..8].to_vec()),
            (
                "signature and junk",
                [&valid[..8], &[7u8; 100][..]].concat(),
            ),
            ("truncated", valid[..valid.len() / 2].to_vec()),
            ("no end", valid[..valid.len() - 20].to_vec()),
            ("bad header checksum", wrong_crc),
        ];
        for (what, bytes) in inputs {
            let result = Canvas::decode_png(&bytes, SMALL);
            assert!(result.is_err(), "{what} was accepted");
            if let Err(e) = result {
                assert!(!e.to_string().is_empty());
            }
        }
    }

    /// One PNG chunk: length, type, data, CRC-32.
    fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut crc = !0u32;
        for &byte in kind.iter().chain(data) {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        let len = u32::try_from(data.len()).unwrap().to_be_bytes();
        [&len[..], kind, data, &(!crc).to_be_bytes()].concat()
    }

    #[test]
    fn absurd_dimensions_are_refused_before_decoding() {
        for (width, height) in [(100_000u32, 10u32), (16_384, 16_384), (1, 1 << 30)] {
            let mut ihdr = Vec::new();
            ihdr.extend_from_slice(&width.to_be_bytes());
            ihdr.extend_from_slice(&height.to_be_bytes());
            ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
            let png = [
                &b"\x89PNG\r\n\x1a\n"[..],
                &chunk(b"IHDR", &ihdr),
                &chunk(b"IDAT", &[0x78, 0x01, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]),
                &chunk(b"IEND", &[]),
            ]
            .concat();
            match Canvas::decode_png(&png, SMALL) {
                Err(CanvasError::TooLarge {
                    width: w,
                    height: h,
                }) => {
                    assert_eq!((w, h), (width, height))
                }
                other => panic!("{width}x{height}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_png_of_another_size_is_drawn_top_left_cropped_or_padded() {
        let mut original = Canvas::blank(CanvasSize {
            width: 40,
            height: 30,
        });
        original.draw(&pen("#0000ff", (5.0, 5.0), (5.0, 5.0), 4.0));
        original.draw(&pen("#ff0000", (35.0, 25.0), (35.0, 25.0), 4.0));
        let png = original.encode_png();

        let smaller_size = CanvasSize {
            width: 20,
            height: 20,
        };
        let smaller = Canvas::decode_png(&png, smaller_size).unwrap();
        assert_eq!(smaller.size(), smaller_size);
        assert_eq!(smaller.pixel(5, 5), [0, 0, 255, 255]);
        assert!(!smaller.is_blank());

        let larger_size = CanvasSize {
            width: 60,
            height: 50,
        };
        let larger = Canvas::decode_png(&png, larger_size).unwrap();
        assert_eq!(larger.size(), larger_size);
        for y in 0..50 {
            for x in 0..60 {
                assert_eq!(larger.pixel(x, y), original.pixel(x, y), "({x}, {y})");
            }
        }
        assert_eq!(larger.pixel(35, 25), [255, 0, 0, 255]);

        // Only the part that was cut off had anything on it: the crop is blank.
        let corner = Canvas::decode_png(
            &Canvas::decode_png(&png, larger_size).unwrap().encode_png(),
            CanvasSize {
                width: 30,
                height: 2,
            },
        )
        .unwrap();
        assert!(corner.is_blank());
    }

    #[test]
    fn short_hex_colours_expand_each_digit() {
        let mut canvas = Canvas::blank(SMALL);
        canvas.draw(&pen("#f80", (10.0, 10.0), (90.0, 10.0), 6.0));
        canvas.draw(&pen("#0aF", (10.0, 30.0), (90.0, 30.0), 6.0));
        assert_eq!(canvas.pixel(50, 10), [0xff, 0x88, 0x00, 255]);
        assert_eq!(canvas.pixel(50, 30), [0x00, 0xaa, 0xff, 255]);
    }

    #[test]
    fn an_unreadable_colour_draws_black() {
        let mut canvas = Canvas::blank(SMALL);
        for (y, bad) in [(10.0, "red"), (30.0, "#12345"), (50.0, "#ggg"), (70.0, "")] {
            canvas.draw(&pen(bad, (10.0, y), (90.0, y), 6.0));
            assert_eq!(canvas.pixel(50, y as u32), [0, 0, 0, 255], "{bad:?}");
        }
    }

    #[test]
    fn segments_that_cannot_be_drawn_are_skipped_without_panicking() {
        let mut canvas = Canvas::blank(SMALL);
        let bad = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e300, -1e300];
        for &v in &bad {
            canvas.draw(&pen("#000", (v, 10.0), (20.0, 20.0), 4.0));
            canvas.draw(&pen("#000", (10.0, 10.0), (20.0, v), 4.0));
            canvas.draw(&pen("#000", (v, v), (v, v), 4.0));
            canvas.draw(&pen("#000", (10.0, 10.0), (20.0, 20.0), v));
        }
        for size in [0.0, -1.0, -0.0] {
            canvas.draw(&pen("#000", (10.0, 10.0), (20.0, 20.0), size));
        }
        assert!(all_transparent(&canvas));
        // Huge but finite values do not panic either (whatever they draw).
        canvas.draw(&pen("#000", (-1e30, 50.0), (1e30, 50.0), 4.0));
        canvas.draw(&pen("#000", (50.0, 50.0), (51.0, 50.0), 1e9));
        canvas.draw(&pen("#000", (50.0, 50.0), (50.0, 50.0), 1e-9));
    }

    #[test]
    fn odd_canvas_sizes_are_clamped_to_a_valid_pixmap() {
        let zero = Canvas::blank(CanvasSize {
            width: 0,
            height: 0,
        });
        assert_eq!(
            zero.size(),
            CanvasSize {
                width: 1,
                height: 1
            }
        );
        assert_eq!(zero.pixel(5, 5), TRANSPARENT);
    }

    fn encode_with(
        width: u32,
        height: u32,
        setup: impl FnOnce(&mut png::Encoder<&mut Vec<u8>>),
        data: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, width, height);
        setup(&mut encoder);
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(data).unwrap();
        writer.finish().unwrap();
        out
    }

    #[test]
    fn every_png_colour_type_and_depth_decodes_to_the_same_pixels() {
        let size = CanvasSize {
            width: 2,
            height: 1,
        };
        let grey = encode_with(
            2,
            1,
            |e| e.set_color(png::ColorType::Grayscale),
            &[0x40, 0xff],
        );
        let grey_alpha = encode_with(
            2,
            1,
            |e| e.set_color(png::ColorType::GrayscaleAlpha),
            &[0x40, 0x80, 0xff, 0],
        );
        let rgb = encode_with(
            2,
            1,
            |e| e.set_color(png::ColorType::Rgb),
            &[1, 2, 3, 4, 5, 6],
        );
        let rgba16 = encode_with(
            2,
            1,
            |e| {
                e.set_color(png::ColorType::Rgba);
                e.set_depth(png::BitDepth::Sixteen);
            },
            &[0xff, 0, 0x80, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0],
        );
        let indexed = encode_with(
            2,
            1,
            |e| {
                e.set_color(png::ColorType::Indexed);
                e.set_depth(png::BitDepth::Four);
                e.set_palette(vec![10, 20, 30, 40, 50, 60]);
                e.set_trns(vec![255, 0]);
            },
            &[0x01],
        );
        let cases = [
            (
                "grey",
                grey,
                [[0x40, 0x40, 0x40, 255], [255, 255, 255, 255]],
            ),
            (
                "grey+alpha",
                grey_alpha,
                [[0x40, 0x40, 0x40, 0x80], TRANSPARENT],
            ),
            ("rgb", rgb, [[1, 2, 3, 255], [4, 5, 6, 255]]),
            ("rgba16", rgba16, [[0xff, 0x80, 0, 255], TRANSPARENT]),
            ("indexed", indexed, [[10, 20, 30, 255], TRANSPARENT]),
        ];
        for (what, png, expected) in cases {
            let canvas = Canvas::decode_png(&png, size).unwrap();
            assert_eq!([canvas.pixel(0, 0), canvas.pixel(1, 0)], expected, "{what}");
        }
    }

    #[test]
    fn an_interlaced_png_decodes_like_a_plain_one() {
        // Adam7 by hand (the encoder only writes plain PNGs): each pass's rows, filter byte 0,
        // in one stored deflate block.
        let (width, height) = (11u32, 9u32);
        let colour = |x: u32, y: u32| [x as u8 * 20, y as u8 * 20, 7, if x == y { 0 } else { 200 }];
        let passes = [
            (0, 0, 8, 8),
            (4, 0, 8, 8),
            (0, 4, 4, 8),
            (2, 0, 4, 4),
            (0, 2, 2, 4),
            (1, 0, 2, 2),
            (0, 1, 1, 2),
        ];
        let mut raw = Vec::new();
        for (x0, y0, dx, dy) in passes {
            if x0 >= width || y0 >= height {
                continue;
            }
            for y in (y0..height).step_by(dy) {
                raw.push(0);
                for x in (x0..width).step_by(dx) {
                    raw.extend_from_slice(&colour(x, y));
                }
            }
        }
        let (mut s1, mut s2) = (1u32, 0u32);
        for &b in &raw {
            s1 = (s1 + u32::from(b)) % 65_521;
            s2 = (s2 + s1) % 65_521;
        }
        let len = u16::try_from(raw.len()).unwrap();
        let mut zlib = vec![0x78, 0x01, 0x01];
        zlib.extend_from_slice(&len.to_le_bytes());
        zlib.extend_from_slice(&(!len).to_le_bytes());
        zlib.extend_from_slice(&raw);
        zlib.extend_from_slice(&((s2 << 16) | s1).to_be_bytes());
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&width.to_be_bytes());
        ihdr.extend_from_slice(&height.to_be_bytes());
        ihdr.extend_from_slice(&[8, 6, 0, 0, 1]);
        let png = [
            &b"\x89PNG\r\n\x1a\n"[..],
            &chunk(b"IHDR", &ihdr),
            &chunk(b"IDAT", &zlib),
            &chunk(b"IEND", &[]),
        ]
        .concat();

        let size = CanvasSize {
            width: 8,
            height: 12,
        };
        let canvas = Canvas::decode_png(&png, size).unwrap();
        for y in 0..12 {
            for x in 0..8 {
                let expected = match colour(x, y) {
                    _ if y >= height => TRANSPARENT,
                    [_, _, _, 0] => TRANSPARENT,
                    c => c,
                };
                let got = canvas.pixel(x, y);
                assert!(
                    got.iter().zip(expected).all(|(&a, b)| a.abs_diff(b) <= 1),
                    "({x}, {y}): {got:?}, not {expected:?}"
                );
            }
        }
    }

    #[test]
    fn pixels_outside_the_canvas_read_transparent_instead_of_wrapping() {
        let mut canvas = Canvas::blank(CanvasSize {
            width: 10,
            height: 10,
        });
        canvas.draw(&pen("#fff", (0.0, 1.5), (10.0, 1.5), 3.0));
        assert_eq!(canvas.pixel(2, 1), [255, 255, 255, 255]);
        assert_eq!(canvas.pixel(12, 0), TRANSPARENT);
        assert_eq!(canvas.pixel(0, 10), TRANSPARENT);
    }

    /// Not an assertion: prints what drawing the largest shapes and texts costs, the worst a
    /// client can send (`cargo test --release --lib canvas -- --nocapture`).
    #[test]
    fn timing_of_the_largest_shapes_and_texts() {
        use crate::protocol::{Shape, ShapeKind, Text};
        let size = CanvasSize {
            width: 1600,
            height: 900,
        };
        let mut canvas = Canvas::blank(size);
        let rounds = 20;
        let started = Instant::now();
        for i in 0..rounds {
            canvas.draw_text(&Text {
                x: -100.0,
                y: f64::from(i) * 40.0 - 100.0,
                text: "Wg@%".repeat(125),
                color: "#123456".into(),
                size: 200.0,
                stroke_id: "t".into(),
            });
        }
        let text = started.elapsed() / rounds;
        let started = Instant::now();
        for i in 0..rounds {
            canvas.draw_shape(&Shape {
                shape: ShapeKind::Ellipse,
                x1: -100.0,
                y1: -100.0,
                x2: 1700.0,
                y2: 1000.0 - f64::from(i),
                color: "#654321".into(),
                size: 64.0,
                fill: Some("#abcdef".into()),
                stroke_id: "e".into(),
            });
        }
        let ellipse = started.elapsed() / rounds;
        let started = Instant::now();
        for i in 0..rounds {
            canvas.draw(&pen(
                "#000",
                (-100.0, f64::from(i)),
                (1700.0, 1000.0 - f64::from(i)),
                64.0,
            ));
        }
        let segment = started.elapsed() / rounds;
        println!(
            "largest on 1600x900: a 500-character text at 200 px {text:?}; a filled ellipse over \
             the whole canvas, 64 px wide {ellipse:?}; a 64 px segment across it {segment:?}"
        );
    }

    /// Not an assertion: prints what encoding and decoding a full-size, busy canvas costs
    /// (`cargo test --release --lib canvas -- --nocapture`).
    #[test]
    fn timing_of_a_full_size_canvas() {
        let size = CanvasSize {
            width: 1600,
            height: 900,
        };
        let mut canvas = Canvas::blank(size);
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move |range: f64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 11) as f64 / (1u64 << 53) as f64 * range
        };
        // Strokes as people draw them: short connected segments, a few colours and sizes.
        let colors = ["#000000", "#1e88e5", "#e53935", "#43a047", "#fdd835"];
        let mut segments = Vec::new();
        for stroke in 0..400 {
            let (mut x, mut y) = (next(1600.0), next(900.0));
            let size = [2.0, 2.0, 4.0, 8.0, 16.0][stroke % 5];
            let color = colors[stroke % colors.len()];
            let tool = if stroke % 10 == 9 {
                Tool::Eraser
            } else {
                Tool::Pen
            };
            for _ in 0..50 {
                let (nx, ny) = (
                    (x + next(20.0) - 10.0).clamp(-100.0, 1700.0),
                    (y + next(20.0) - 10.0).clamp(-100.0, 1000.0),
                );
                segments.push(segment(color, (x, y), (nx, ny), size, tool));
                (x, y) = (nx, ny);
            }
        }
        let started = Instant::now();
        for s in &segments {
            canvas.draw(s);
        }
        let drawing = started.elapsed();

        let rounds = 5;
        let started = Instant::now();
        let mut png = Vec::new();
        for _ in 0..rounds {
            png = canvas.encode_png();
        }
        let encoding = started.elapsed() / rounds;
        let started = Instant::now();
        for _ in 0..rounds {
            let decoded = Canvas::decode_png(&png, size).unwrap();
            assert!(!decoded.is_blank());
        }
        let decoding = started.elapsed() / rounds;
        let started = Instant::now();
        let white = canvas.encode_png_on_white();
        let on_white = started.elapsed();
        let blank_png = Canvas::blank(size).encode_png();
        println!(
            "canvas 1600x900: {} segments drawn in {drawing:?} ({:.2} us each); encode_png \
             {encoding:?} ({} KiB); decode_png {decoding:?}; encode_png_on_white {on_white:?} \
             ({} KiB); blank PNG {} bytes",
            segments.len(),
            drawing.as_secs_f64() * 1e6 / segments.len() as f64,
            png.len() / 1024,
            white.len() / 1024,
            blank_png.len()
        );
    }
}
