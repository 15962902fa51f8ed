enum VoiceRelayPlaceholder {}
