"""Client simulators that drive a running voxpipe server over real sockets, as Twilio and a browser would."""
