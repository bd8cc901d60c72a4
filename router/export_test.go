package router

// SamePeer exposes samePeer to the package's tests.
var SamePeer = samePeer
