package flowgen

// File is one committed recording in testdata/flows.
type File struct {
	Name     string
	Generate func(Emit) error
}

// Files lists the recordings hack/genflows writes to testdata/flows, in order.
func Files() []File {
	return []File{
		{"starwars.jsonl", Starwars},
		{"boutique.jsonl", Boutique},
		{"boutique-day2.jsonl", BoutiqueDay2},
		{"boutique-newconn.jsonl", BoutiqueNewConn},
	}
}
