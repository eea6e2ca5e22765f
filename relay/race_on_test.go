//go:build race

package relay

// raceFactor scales memory bounds: the race detector multiplies memory.
const raceFactor = 4
