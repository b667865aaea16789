package main

import (
	"net"
	"os"
)

// sdNotify tells systemd about the broker's state (READY=1, STOPPING=1, …)
// when it runs as a Type=notify service, which sets NOTIFY_SOCKET; otherwise
// it does nothing. The protocol is one datagram per message on that
// socket: sd_notify(3).
func sdNotify(state string) error {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return nil
	}
	if name[0] == '@' {
		name = "\x00" + name[1:] // an abstract socket
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = conn.Write([]byte(state))
	return err
}
