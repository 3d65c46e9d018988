# docs_section.sh -- sourced by the experiment scripts under bench/.
#
#   docs_section_update NAME DOCS FILE
#
# Puts FILE's text into DOCS between the lines <!-- NAME:begin --> and <!-- NAME:end -->,
# replacing what was there and keeping the rest of DOCS as it is; appends the section
# (with its markers) when DOCS has none yet. DOCS is replaced atomically (a temporary file
# in its directory, then mv). Returns nonzero, leaving DOCS untouched, on failure.
docs_section_update() {
    local name=$1 docs=$2 file=$3 tmp
    local begin="<!-- $name:begin -->" end="<!-- $name:end -->"
    tmp=$(mktemp "$docs.XXXXXX") || return 1
    if grep -qF "$begin" "$docs" && grep -qF "$end" "$docs"; then
        awk -v b="$begin" -v e="$end" -v f="$file" '
            $0 == b { print; while ((getline l < f) > 0) print l; skip = 1; next }
            $0 == e { skip = 0 }
            !skip { print }' "$docs" >"$tmp"
    else
        { cat "$docs"; printf '\n%s\n' "$begin"; cat "$file"; printf '%s\n' "$end"; } >"$tmp"
    fi
    if ! chmod --reference="$docs" "$tmp" || ! mv "$tmp" "$docs"; then
        rm -f "$tmp"
        return 1
    fi
}
