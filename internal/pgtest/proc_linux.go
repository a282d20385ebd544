package pgtest

import "syscall"

// sysProcAttr runs a child as cred (nil: as us). The kernel sends the postmaster SIGQUIT
// (immediate shutdown) if the test binary dies without cleaning up, so no server outlives it.
func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGQUIT}
}
