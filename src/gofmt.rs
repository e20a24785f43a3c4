//! Go's text for floating-point numbers, shared by the CEL and template engines (KrakenD
//! prints numbers the way Go does), and the `printf` verbs the template subset accepts.

/// `strconv.FormatFloat(d, 'g', -1, 64)` with the exponent switch at `exp_limit`: shortest
/// digits that read back as `d`, exponent form (`1e+21`, `1.5e-07`) when the decimal exponent
/// is below -4 or at least `exp_limit`. Go uses 21 for `fmt`'s `%v` (text/template's output)
/// and 6 for `strconv` (cel-go's `string(double)`).
pub fn float_text(d: f64, exp_limit: i32) -> String {
    if d.is_nan() {
        return "NaN".into();
    }
    if d.is_infinite() {
        return if d > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    let sci = format!("{d:e}");
    let Some((mant, exp)) = sci.split_once('e') else {
        return format!("{d}");
    };
    let exp: i32 = exp.parse().unwrap_or(0);
    if d == 0.0 || (-4..exp_limit).contains(&exp) {
        return format!("{d}");
    }
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mant}e{sign}{:02}", exp.unsigned_abs())
}

/// The `printf` verbs of the subset: `%s`, `%v`, `%d`, `%%` (no flags, width or precision).
pub fn check_format(fmt: &str) -> Result<(), String> {
    let mut it = fmt.chars();
    while let Some(c) = it.next() {
        if c == '%' {
            match it.next() {
                Some('s' | 'v' | 'd' | '%') => {}
                Some(v) => {
                    return Err(format!(
                        "printf verb %{v} is not supported (only %s %v %d %%)"
                    ))
                }
                None => return Err("printf format ends with %".into()),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::float_text;

    #[test]
    fn go_float_text() {
        for (d, lim, want) in [
            (1500.0, 21, "1500"),
            (1.5, 21, "1.5"),
            (1e21, 21, "1e+21"),
            (1e20, 21, "100000000000000000000"),
            (0.00001, 21, "1e-05"),
            (0.0001, 21, "0.0001"),
            (123456789.0, 6, "1.23456789e+08"),
            (100000.0, 6, "100000"),
            (1e6, 6, "1e+06"),
            (-2.5e-7, 6, "-2.5e-07"),
            (0.0, 6, "0"),
            (f64::NAN, 6, "NaN"),
            (f64::NEG_INFINITY, 6, "-Inf"),
        ] {
            assert_eq!(float_text(d, lim), want, "{d}");
        }
    }
}
