use super::*;

#[test]
fn distance_rows_accept_kernel_text_and_refuse_garbage() {
    let path = Path::new("node0/distance");
    assert_eq!(parse_distance_row(path, "10 21\n\0").unwrap(), vec![10, 21]);
    assert!(parse_distance_row(path, "\n").unwrap_err().to_string().contains("empty"));
    let error = parse_distance_row(path, "10 abc").unwrap_err();
    assert!(error.to_string().contains("\"abc\""), "{error}");
    assert!(parse_distance_row(path, "10 4000").is_err());
}
