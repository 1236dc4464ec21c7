//! The man pages of both programs, as clap_mangen writes them: `NAME.8`
//! and one `NAME-COMMAND.8` per visible command.

use std::path::Path;

/// Writes the pages of the program `name`, whose command line is `top`,
/// into `dir` (created if missing).
pub fn write_pages(top: clap::Command, name: &str, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let write = |cmd: clap::Command, page: &str| -> std::io::Result<()> {
        let mut file = std::fs::File::create(dir.join(format!("{page}.8")))?;
        clap_mangen::Man::new(cmd).section("8").render(&mut file)
    };
    for sub in top.get_subcommands().filter(|s| !s.is_hide_set()) {
        let page = format!("{name}-{}", sub.get_name());
        write(sub.clone().name(page.clone()), &page)?;
    }
    write(top, name)
}
