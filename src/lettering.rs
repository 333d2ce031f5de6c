//! Lettering: a `text` operation's glyphs as one path, from the outlines of the font the server
//! ships (`frontend/fonts/DejaVuSans.ttf`, built into the binary), the font the page loads with
//! `@font-face`, so that a text looks the same in `canvas.png` as on every page.
//!
//! It lays one line of text out as the page's canvas does with kerning and ligatures off: each
//! character's glyph, advanced by its advance width, the baseline the font's ascent below the
//! text's `y`. It is pure; it must never panic on any text (a character the font lacks is drawn
//! as the font's missing-glyph box) and never read the font file at run time.

use std::sync::LazyLock;

use ab_glyph::{Font, FontRef, OutlineCurve, Point};
use tiny_skia::{Path, PathBuilder};

use crate::protocol::Text;

/// The font's file, as shipped beside the page.
static FONT_BYTES: &[u8] = include_bytes!("../frontend/fonts/DejaVuSans.ttf");

static FONT: LazyLock<Option<FontRef<'static>>> = LazyLock::new(|| {
    FontRef::try_from_slice(FONT_BYTES)
        .inspect_err(|err| {
            log::error!("the built-in font does not load: {err}; texts are not drawn")
        })
        .ok()
});

/// The path of `text`'s glyphs, in canvas coordinates, up to the first glyph that starts past
/// `right_edge` (advances are positive: nothing after it can show); `None` when nothing would be
/// drawn (only spaces, or numbers no path can hold).
pub fn text_path(text: &Text, right_edge: f32) -> Option<Path> {
    let font = FONT.as_ref()?;
    let units_per_em = font.units_per_em()?;
    let scale = text.size as f32 / units_per_em;
    let baseline = text.y as f32 + font.ascent_unscaled() * scale;
    let mut caret = text.x as f32;
    let mut builder = PathBuilder::new();
    // A glyph may reach left of its origin by some of its size, never by more than the em.
    let stop_at = right_edge + text.size as f32;
    for c in text.text.chars() {
        if caret > stop_at {
            break;
        }
        let glyph = font.glyph_id(c);
        if let Some(outline) = font.outline(glyph) {
            let place = |p: Point| (caret + p.x * scale, baseline - p.y * scale);
            trace(&mut builder, &outline.curves, place);
        }
        caret += font.h_advance_unscaled(glyph) * scale;
    }
    builder.finish()
}

/// Adds glyph `curves` (font units, y up) to `builder`, placed by `place`; a curve that does not
/// start where the last one ended starts a new contour.
fn trace(builder: &mut PathBuilder, curves: &[OutlineCurve], place: impl Fn(Point) -> (f32, f32)) {
    let mut pen: Option<Point> = None;
    for curve in curves {
        let (start, end) = match *curve {
            OutlineCurve::Line(a, b) => (a, b),
            OutlineCurve::Quad(a, _, b) => (a, b),
            OutlineCurve::Cubic(a, _, _, b) => (a, b),
        };
        if pen != Some(start) {
            if pen.is_some() {
                builder.close();
            }
            let (x, y) = place(start);
            builder.move_to(x, y);
        }
        match *curve {
            OutlineCurve::Line(_, b) => {
                let (x, y) = place(b);
                builder.line_to(x, y);
            }
            OutlineCurve::Quad(_, c, b) => {
                let ((cx, cy), (x, y)) = (place(c), place(b));
                builder.quad_to(cx, cy, x, y);
            }
            OutlineCurve::Cubic(_, c1, c2, b) => {
                let ((ax, ay), (bx, by), (x, y)) = (place(c1), place(c2), place(b));
                builder.cubic_to(ax, ay, bx, by, x, y);
            }
        }
        pen = Some(end);
    }
    if pen.is_some() {
        builder.close();
    }
}

/// How far below a text's `y` its baseline is, per pixel of font size (the font's ascent over its
/// em): the page places its baseline with the same number.
#[cfg(test)]
fn ascent_per_em() -> Option<f32> {
    let font = FONT.as_ref()?;
    Some(font.ascent_unscaled() / font.units_per_em()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(text: &str, size: f64) -> Text {
        Text {
            x: 10.0,
            y: 20.0,
            text: text.into(),
            color: "#000000".into(),
            size,
            stroke_id: "t".into(),
        }
    }

    #[test]
    fn the_shipped_font_loads_with_the_ascent_the_page_uses() {
        // frontend/text.js: ASCENT_PER_EM = 1901 / 2048 (DejaVu Sans's hhea ascender over its em).
        assert_eq!(ascent_per_em(), Some(1901.0 / 2048.0));
    }

    #[test]
    fn a_text_spans_its_advance_widths_and_sits_on_its_baseline() {
        let path = text_path(&text("HHHH", 100.0), 1600.0).unwrap();
        let bounds = path.bounds();
        // DejaVu Sans's H: 1540 units of advance, its stems 201 units in from either side.
        let advance = 1540.0 / 2048.0 * 100.0;
        assert!((bounds.left() - (10.0 + 201.0 / 2048.0 * 100.0)).abs() < 0.5);
        assert!((bounds.right() - (10.0 + 4.0 * advance - 201.0 / 2048.0 * 100.0)).abs() < 0.5);
        let baseline = 20.0 + 1901.0 / 2048.0 * 100.0;
        assert!((bounds.bottom() - baseline).abs() < 0.5, "{bounds:?}");
        // A capital is 1493 units tall.
        assert!((bounds.top() - (baseline - 1493.0 / 2048.0 * 100.0)).abs() < 0.5);
    }

    #[test]
    fn glyphs_past_the_right_edge_are_left_out() {
        let long = text_path(&text(&"H".repeat(500), 100.0), 1600.0).unwrap();
        let advance = 1540.0 / 2048.0 * 100.0;
        // Up to the first H whose origin is past the edge plus one em, not all 500.
        assert!(long.bounds().right() < 1600.0 + 100.0 + advance + 1.0);
        assert!(long.bounds().right() > 1600.0);
    }

    #[test]
    fn spaces_draw_nothing_and_missing_glyphs_draw_a_box() {
        assert!(text_path(&text("   ", 40.0), 1600.0).is_none());
        assert!(text_path(&text("\u{10FFFD}", 40.0), 1600.0).is_some());
    }
}
