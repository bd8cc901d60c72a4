package router

// SamePeer exposes samePeer to the package's tests.
var SamePeer = samePeer

// DiffRoutes exposes diffRoutes to the package's tests.
var DiffRoutes = diffRoutes

// OnePerDst exposes onePerDst to the package's tests.
var OnePerDst = onePerDst
