//! Ctrl-C, written once for every command that starts devices or holds them: the browsers this
//! process started are killed, its emulator containers removed, what its scenarios changed on
//! the real devices it holds undone (only while it still holds their lease), the leases given
//! back; then the process exits with 130, as a shell reports an interrupted command.

/// Handles Ctrl-C from now on for this process; `what` says, in the line printed, what it is
/// about to do.
pub fn guard(what: &'static str) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\nnexus-hil: interrupted; {what}");
            crate::browser::kill_all();
            let _ = crate::device::container::remove_owned(std::process::id()).await;
            for dev in crate::bench::lock::held_devices() {
                let undone = super::tidy::undo_on(&dev).await;
                for line in undone.lines.iter().chain(undone.error.iter()) {
                    eprintln!("nexus-hil: {}: {line}", dev.ssh.host);
                }
            }
            crate::bench::lock::release_all().await;
            for line in crate::bench::sdmux::give_back_all().await {
                eprintln!("nexus-hil: {line}");
            }
            std::process::exit(130);
        }
    });
}
