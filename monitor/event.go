// Code kept for the packages that still name the event vocabulary through
// monitor: the names are package event's (see there).

package monitor

import "github.com/antnode/antnode/event"

// Recorder is event.Recorder.
type Recorder = event.Recorder

// Nop is event.Nop.
type Nop = event.Nop

// Kind is event.Kind.
type Kind = event.Kind

// Phase is event.Phase.
type Phase = event.Phase

// Outcome is event.Outcome.
type Outcome = event.Outcome

// Reason is event.Reason.
type Reason = event.Reason

// Path is event.Path.
type Path = event.Path

// Event is event.Event.
type Event = event.Event

// Attempt is event.Attempt.
type Attempt = event.Attempt

// AttemptID is event.AttemptID.
type AttemptID = event.AttemptID

// ParseReason is event.ParseReason.
func ParseReason(s string) (Reason, error) { return event.ParseReason(s) }

// NewAttemptID is event.NewAttemptID.
func NewAttemptID() AttemptID { return event.NewAttemptID() }

// StartAttempt is event.StartAttempt.
func StartAttempt(rec Recorder, peer, role, nat, families string) *Attempt {
	return event.StartAttempt(rec, peer, role, nat, families)
}

// The event vocabulary's values, from package event.
const (
	KindAttemptStart           = event.KindAttemptStart
	KindAttemptEnd             = event.KindAttemptEnd
	KindPhaseStart             = event.KindPhaseStart
	KindPhaseEnd               = event.KindPhaseEnd
	KindCandidate              = event.KindCandidate
	KindCheckSent              = event.KindCheckSent
	KindCheckAnswered          = event.KindCheckAnswered
	KindPathValidated          = event.KindPathValidated
	KindFallback               = event.KindFallback
	KindMigration              = event.KindMigration
	KindStateChange            = event.KindStateChange
	KindBootstrapRequest       = event.KindBootstrapRequest
	KindBootstrapState         = event.KindBootstrapState
	KindRegistration           = event.KindRegistration
	KindLatency                = event.KindLatency
	KindThroughput             = event.KindThroughput
	KindRecovery               = event.KindRecovery
	KindSecurity               = event.KindSecurity
	KindRelay                  = event.KindRelay
	KindNATType                = event.KindNATType
	KindBreaker                = event.KindBreaker
	KindStream                 = event.KindStream
	PhaseNone                  = event.PhaseNone
	PhaseRegister              = event.PhaseRegister
	PhaseDiscover              = event.PhaseDiscover
	PhaseClassify              = event.PhaseClassify
	PhaseCoordinate            = event.PhaseCoordinate
	PhaseSync                  = event.PhaseSync
	PhasePunch                 = event.PhasePunch
	PhaseValidate              = event.PhaseValidate
	PhaseHandshake             = event.PhaseHandshake
	PhaseRelay                 = event.PhaseRelay
	PhaseTransfer              = event.PhaseTransfer
	PhaseMigrate               = event.PhaseMigrate
	OutcomeNone                = event.OutcomeNone
	OutcomeOK                  = event.OutcomeOK
	OutcomeFail                = event.OutcomeFail
	OutcomeCanceled            = event.OutcomeCanceled
	OutcomeSkipped             = event.OutcomeSkipped
	ReasonNone                 = event.ReasonNone
	ReasonTimeout              = event.ReasonTimeout
	ReasonCanceled             = event.ReasonCanceled
	ReasonBootstrapUnreachable = event.ReasonBootstrapUnreachable
	ReasonNoBootstrap          = event.ReasonNoBootstrap
	ReasonUnknownPeer          = event.ReasonUnknownPeer
	ReasonRateLimited          = event.ReasonRateLimited
	ReasonRefused              = event.ReasonRefused
	ReasonExpired              = event.ReasonExpired
	ReasonOverloaded           = event.ReasonOverloaded
	ReasonKeyMismatch          = event.ReasonKeyMismatch
	ReasonHandshakeFailed      = event.ReasonHandshakeFailed
	ReasonProtocolError        = event.ReasonProtocolError
	ReasonNoCandidates         = event.ReasonNoCandidates
	ReasonUDPBlocked           = event.ReasonUDPBlocked
	ReasonBothSymmetric        = event.ReasonBothSymmetric
	ReasonNoCommonFamily       = event.ReasonNoCommonFamily
	ReasonPunchTimeout         = event.ReasonPunchTimeout
	ReasonRelayUnavailable     = event.ReasonRelayUnavailable
	ReasonRelayQuota           = event.ReasonRelayQuota
	ReasonPathBlackholed       = event.ReasonPathBlackholed
	ReasonMappingExpired       = event.ReasonMappingExpired
	ReasonNetworkChanged       = event.ReasonNetworkChanged
	ReasonTransferMismatch     = event.ReasonTransferMismatch
	ReasonConnectionLost       = event.ReasonConnectionLost
	ReasonSelf                 = event.ReasonSelf
	ReasonInternal             = event.ReasonInternal
	ReasonDirectAvailable      = event.ReasonDirectAvailable
	ReasonUnknownService       = event.ReasonUnknownService
	ReasonNotAllowed           = event.ReasonNotAllowed
	ReasonTargetUnreachable    = event.ReasonTargetUnreachable
	ReasonStreamLimit          = event.ReasonStreamLimit
	ReasonRegistryFull         = event.ReasonRegistryFull
	ReasonBadCredentials       = event.ReasonBadCredentials
	PathNone                   = event.PathNone
	PathDirect                 = event.PathDirect
	PathRelay                  = event.PathRelay
	NumKinds                   = event.NumKinds
	NumPhases                  = event.NumPhases
	NumOutcomes                = event.NumOutcomes
	NumReasons                 = event.NumReasons
	NumPaths                   = event.NumPaths
)
