from quorum.apt import _parse_deb822, _parse_one_line


def test_deb822_and_one_line_parsing():
    e = _parse_deb822("Types: deb\nURIs: http://example.invalid/debian\nSuites: bookworm bookworm-updates\n"
                      "Components: main contrib\nSigned-By: /k.gpg\n\n# c\nTypes: deb-src\nURIs: x\nSuites: y\n"
                      "Components: main\n")
    assert len(e) == 1 and e[0].suites == ("bookworm", "bookworm-updates") and e[0].signed_by == "/k.gpg"
    o = _parse_one_line("deb [arch=amd64 signed-by=/k.gpg] http://example.invalid/debian bookworm main\n"
                        "# deb http://x y z\ndeb-src http://a b main\n")
    assert len(o) == 1 and o[0].signed_by == "/k.gpg" and o[0].components == ("main",)
