//! Shapes' geometry: the paths a `shape` operation outlines and fills, as the page draws them
//! (`frontend/shapes.js`, `shapePath`): the same corners, the same arrow head, the same rule for a
//! shape with no width or height.
//!
//! It is pure (paths only; no pixels, no I/O). It must never panic on a shape's numbers (a path
//! that cannot be made is `None`), and must stay in step with the page's geometry: a change here
//! is a change there.

use tiny_skia::{Path, PathBuilder, Rect};

use crate::protocol::{Shape, ShapeKind};

/// An arrow head's length per logical pixel of line width.
pub const ARROW_HEAD_PER_SIZE: f64 = 4.0;
/// The shortest arrow head, in logical pixels, so thin arrows still show one.
pub const MIN_ARROW_HEAD_PX: f64 = 12.0;
/// The angle between an arrow's shaft and each side of its head.
pub const ARROW_HEAD_ANGLE_RAD: f64 = std::f64::consts::PI / 6.0;

/// What to draw for a shape.
pub enum Outline {
    /// A point: a filled disc of the line's width.
    Dot { x: f32, y: f32, radius: f32 },
    /// A path stroked with the line's width (round caps and joins), filled first when the shape
    /// has a fill and `closed` is true.
    Path { path: Path, closed: bool },
}

/// The outline of `shape`. A rectangle or ellipse with no width or no height is the line between
/// its corners (nothing to fill), and a line of no length a dot.
pub fn outline(shape: &Shape) -> Option<Outline> {
    let (x1, y1, x2, y2) = (shape.x1, shape.y1, shape.x2, shape.y2);
    // Compared as the page compares them (`===` on the decoded numbers).
    if x1 == x2 && y1 == y2 && shape.shape != ShapeKind::Arrow {
        return Some(Outline::Dot {
            x: x1 as f32,
            y: y1 as f32,
            radius: shape.size as f32 / 2.0,
        });
    }
    let flat = x1 == x2 || y1 == y2;
    let mut builder = PathBuilder::new();
    let closed = match shape.shape {
        ShapeKind::Line => {
            line(&mut builder, (x1, y1), (x2, y2));
            false
        }
        ShapeKind::Rect | ShapeKind::Ellipse if flat => {
            line(&mut builder, (x1, y1), (x2, y2));
            false
        }
        ShapeKind::Rect => {
            builder.move_to(x1 as f32, y1 as f32);
            builder.line_to(x2 as f32, y1 as f32);
            builder.line_to(x2 as f32, y2 as f32);
            builder.line_to(x1 as f32, y2 as f32);
            builder.close();
            true
        }
        ShapeKind::Ellipse => {
            let oval = Rect::from_ltrb(
                x1.min(x2) as f32,
                y1.min(y2) as f32,
                x1.max(x2) as f32,
                y1.max(y2) as f32,
            )?;
            builder.push_oval(oval);
            true
        }
        ShapeKind::Arrow => {
            line(&mut builder, (x1, y1), (x2, y2));
            let [left, right] = arrow_head(shape);
            builder.move_to(left.0 as f32, left.1 as f32);
            builder.line_to(x2 as f32, y2 as f32);
            builder.line_to(right.0 as f32, right.1 as f32);
            false
        }
    };
    let path = builder.finish()?;
    Some(Outline::Path { path, closed })
}

fn line(builder: &mut PathBuilder, from: (f64, f64), to: (f64, f64)) {
    builder.move_to(from.0 as f32, from.1 as f32);
    builder.line_to(to.0 as f32, to.1 as f32);
}

/// An arrow head's length: proportional to the line's width, never shorter than
/// [`MIN_ARROW_HEAD_PX`].
pub fn arrow_head_length(size: f64) -> f64 {
    (size * ARROW_HEAD_PER_SIZE).max(MIN_ARROW_HEAD_PX)
}

/// The ends of the two sides of an arrow's head, which meet at (x2, y2).
pub fn arrow_head(shape: &Shape) -> [(f64, f64); 2] {
    let angle = (shape.y2 - shape.y1).atan2(shape.x2 - shape.x1);
    let length = arrow_head_length(shape.size);
    let side = |turn: f64| {
        (
            shape.x2 - length * (angle + turn).cos(),
            shape.y2 - length * (angle + turn).sin(),
        )
    };
    [side(ARROW_HEAD_ANGLE_RAD), side(-ARROW_HEAD_ANGLE_RAD)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(kind: ShapeKind, from: (f64, f64), to: (f64, f64), size: f64) -> Shape {
        Shape {
            shape: kind,
            x1: from.0,
            y1: from.1,
            x2: to.0,
            y2: to.1,
            color: "#000000".into(),
            size,
            fill: None,
            stroke_id: "s".into(),
        }
    }

    #[test]
    fn an_arrow_head_grows_with_the_line_width_and_points_back_along_the_shaft() {
        assert_eq!(arrow_head_length(1.0), MIN_ARROW_HEAD_PX);
        assert_eq!(arrow_head_length(10.0), 40.0);
        let arrow = shape(ShapeKind::Arrow, (0.0, 50.0), (100.0, 50.0), 10.0);
        let [left, right] = arrow_head(&arrow);
        for (x, y) in [left, right] {
            assert!((x - (100.0 - 40.0 * ARROW_HEAD_ANGLE_RAD.cos())).abs() < 1e-9);
            assert!(((y - 50.0).abs() - 40.0 * ARROW_HEAD_ANGLE_RAD.sin()).abs() < 1e-9);
        }
        assert!((left.1 - right.1).abs() > 1.0, "one side above, one below");
    }

    #[test]
    fn flat_boxes_are_lines_and_points_are_dots() {
        let flat = shape(ShapeKind::Ellipse, (10.0, 10.0), (90.0, 10.0), 4.0);
        assert!(matches!(
            outline(&flat),
            Some(Outline::Path { closed: false, .. })
        ));
        let point = shape(ShapeKind::Rect, (10.0, 10.0), (10.0, 10.0), 4.0);
        assert!(matches!(outline(&point), Some(Outline::Dot { radius, .. }) if radius == 2.0));
        let boxed = shape(ShapeKind::Rect, (10.0, 10.0), (30.0, 40.0), 4.0);
        assert!(matches!(
            outline(&boxed),
            Some(Outline::Path { closed: true, .. })
        ));
    }
}
