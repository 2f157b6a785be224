//! A program's custom sections: the one walk that the manifest and the inputs declaration
//! share, in the host and in the enclaves alike.

/// Why a section could not be found once.
pub(crate) enum SectionError {
    /// The module's sections do not parse.
    Module(String),
    /// The section appears more than once.
    Duplicate,
}

/// The payload of the custom section called `name`, if the module has one. Walks the
/// module's sections without validating their contents (the sandbox does that at load); a
/// module whose section structure does not parse, or with the section twice, is refused.
pub(crate) fn find_once<'a>(wasm: &'a [u8], name: &str) -> Result<Option<&'a [u8]>, SectionError> {
    let mut found = None;
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| SectionError::Module(e.message().to_owned()))?;
        if let wasmparser::Payload::CustomSection(section) = payload
            && section.name() == name
        {
            if found.is_some() {
                return Err(SectionError::Duplicate);
            }
            found = Some(section.data());
        }
    }
    Ok(found)
}
