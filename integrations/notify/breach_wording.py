"""The fixed words of a breach notification draft (``breach_draft``), in French, Dutch and
English: section headings and sentences, the authorities' names, where to submit."""

from __future__ import annotations

FORM = {
    "apd": "Submit it to the Belgian Data Protection Authority (APD/GBA) with the PDF e-form "
    "of its e-forms portal, filled in French or Dutch (forms sent by e-mail are not "
    "processed); Tocsin has not contacted the authority.",
    "cnil": "Submit it to the CNIL through its online téléservice for personal-data breach "
    "notifications, in French (an initial notification can be completed later); Tocsin has "
    "not contacted the authority.",
}
"""Where and how the office submits the draft, for the runbook's instructions (English)."""

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Personal data breach notification — draft for {authority}",
        "intro": "Draft prepared by Tocsin for incident {incident}. It follows GDPR art. 33(3); "
        "copy each section into the matching field of the authority's form (the form's exact "
        "fields are not verified here, and it may ask for more). Nothing has been sent to the "
        "authority.",
        "submit": "How to submit",
        "form_apd": "With the PDF e-form of the APD/GBA's e-forms portal, filled in French or "
        "Dutch. Forms sent by e-mail are not processed.",
        "form_cnil": "Through the CNIL's online téléservice for personal-data breach "
        "notifications, in French.",
        "language_note": "This draft is in English for the office's own use: the authority "
        "takes the notification in {languages}.",
        "translate": "the draft translated into {languages}",
        "to_complete": "To complete before submitting",
        "nothing_to_complete": "Nothing is marked to complete; check every section before "
        "submitting.",
        "marker": "TO COMPLETE",
        "controller": "Controller",
        "controller_name": "Name and registration number",
        "reference": "Internal reference",
        "dates": "Dates and deadline (art. 33(1))",
        "aware": "The office became aware of the breach",
        "started": "The breach happened or started",
        "deadline": "Deadline to notify (72 hours after becoming aware)",
        "status": "Status",
        "in_time": "within the deadline",
        "late": "the deadline has passed: give the reasons for the delay (below)",
        "delay": "Reasons for the delay (art. 33(1))",
        "a": "(a) Nature of the breach",
        "data_categories": "Categories of personal data concerned",
        "people_categories": "Categories of people concerned",
        "people_count": "Approximate number of people concerned",
        "records_count": "Approximate number of records concerned",
        "b": "(b) Data-protection officer or other contact point",
        "c": "(c) Likely consequences",
        "d": "(d) Measures taken or proposed",
        "taken": "Measures taken (recorded by this run)",
        "titles_note": "Step titles as the runbook names them.",
        "by": "by {who}",
        "proposed": "Measures proposed, including to mitigate the possible adverse effects",
        "art34": "Communication to the people concerned (art. 34)",
        "high_risk": "The risk to the rights and freedoms of the people concerned is assessed as "
        "high: art. 34 requires informing them without undue delay, in clear and plain "
        "language, with the contact point (b), the likely consequences (c) and the measures "
        "(d).",
        "informed": "People concerned informed so far",
        "message": "What the people concerned are told (clear language)",
        "msg_what": "What happened: {text}",
        "msg_risk": "What it may mean for you: {text}",
        "msg_done": "What we have done: {text}",
        "msg_advice": "What we are doing next: {text}",
        "msg_contact": "Who to contact with questions: {text}",
        "low_risk": "The risk is not assessed as high: art. 34 does not require informing the "
        "people concerned. Should it become high, they must be informed unless an art. 34(3) "
        "exception applies: the data were unintelligible to anyone not authorised (encrypted), "
        "later measures mean the high risk is no longer likely, or informing each person would "
        "take disproportionate effort (a public communication is then made instead).",
        "informed_anyway": "People concerned informed nevertheless",
        "phases": "Phased notification and register",
        "phases_text": "If some of this information is not yet available, notify what is known "
        "now and provide the rest in phases without undue further delay (art. 33(4)).",
        "register": "Record the breach, its effects and the measures taken in the office's "
        "breach register, whether or not it is notified (art. 33(5)).",
        # what is left to complete
        "need_controller": "the controller's name and registration number",
        "need_contact": "the name and contact details of the data-protection officer or "
        "other contact point",
        "need_people": "the approximate number of people concerned",
        "need_records": "the approximate number of records concerned",
        "need_data_categories": "the categories of personal data concerned",
        "need_people_categories": "the categories of people concerned",
        "need_started": "when the breach happened or started, if known",
        "need_aware": "when the office became aware of the breach",
        "need_delay": "the reasons for the delay",
        "need_nature": "the nature of the breach",
        "need_consequences": "the likely consequences of the breach",
        "need_taken": "the measures taken",
        "need_proposed": "the measures proposed to address the breach and mitigate its effects",
        "need_informed": "how many people concerned were informed, when and how",
        "need_inform": "when and how the people concerned are informed",
    },
    "fr": {
        "title": "Notification d'une violation de données à caractère personnel — projet pour "
        "{authority}",
        "intro": "Projet préparé par Tocsin pour l'incident {incident}. Il suit l'article 33.3 "
        "du RGPD : copiez chaque section dans le champ correspondant du formulaire de "
        "l'autorité (les champs exacts du formulaire ne sont pas vérifiés ici, et il peut en "
        "demander davantage). Rien n'a été envoyé à l'autorité.",
        "submit": "Comment le soumettre",
        "form_apd": "Avec le formulaire électronique PDF du portail e-forms de l'APD, rempli en "
        "français ou en néerlandais. Les formulaires envoyés par e-mail ne sont pas traités.",
        "form_cnil": "Par le téléservice de notification de violations de données à caractère "
        "personnel de la CNIL, en français.",
        "language_note": "Ce projet est en français ; l'autorité reçoit la notification en "
        "{languages}.",
        "translate": "le projet traduit en {languages}",
        "to_complete": "À compléter avant la soumission",
        "nothing_to_complete": "Rien n'est marqué à compléter ; relisez chaque section avant de "
        "soumettre.",
        "marker": "À COMPLÉTER",
        "controller": "Responsable du traitement",
        "controller_name": "Nom et numéro d'entreprise",
        "reference": "Référence interne",
        "dates": "Dates et délai (art. 33.1)",
        "aware": "Le cabinet a pris connaissance de la violation le",
        "started": "La violation a eu lieu ou commencé le",
        "deadline": "Délai de notification (72 heures après la prise de connaissance)",
        "status": "Statut",
        "in_time": "dans le délai",
        "late": "le délai est dépassé : indiquez les motifs du retard (ci-dessous)",
        "delay": "Motifs du retard (art. 33.1)",
        "a": "a) Nature de la violation",
        "data_categories": "Catégories de données à caractère personnel concernées",
        "people_categories": "Catégories de personnes concernées",
        "people_count": "Nombre approximatif de personnes concernées",
        "records_count": "Nombre approximatif d'enregistrements concernés",
        "b": "b) Délégué à la protection des données ou autre point de contact",
        "c": "c) Conséquences probables",
        "d": "d) Mesures prises ou proposées",
        "taken": "Mesures prises (enregistrées par cette exécution)",
        "titles_note": "Intitulés des étapes tels que la procédure les nomme ; traduisez-les au "
        "besoin.",
        "by": "par {who}",
        "proposed": "Mesures proposées, y compris pour atténuer les éventuelles conséquences "
        "négatives",
        "art34": "Communication aux personnes concernées (art. 34)",
        "high_risk": "Le risque pour les droits et libertés des personnes concernées est jugé "
        "élevé : l'article 34 impose de les informer dans les meilleurs délais, en des termes "
        "clairs et simples, avec le point de contact (b), les conséquences probables (c) et les "
        "mesures (d).",
        "informed": "Personnes concernées informées à ce jour",
        "message": "Ce qui est dit aux personnes concernées (termes clairs)",
        "msg_what": "Ce qui s'est passé : {text}",
        "msg_risk": "Ce que cela peut signifier pour vous : {text}",
        "msg_done": "Ce que nous avons fait : {text}",
        "msg_advice": "Ce que nous faisons ensuite : {text}",
        "msg_contact": "Qui contacter pour toute question : {text}",
        "low_risk": "Le risque n'est pas jugé élevé : l'article 34 n'impose pas d'informer les "
        "personnes concernées. S'il le devenait, elles devraient l'être, sauf exception de "
        "l'article 34.3 : les données étaient incompréhensibles pour toute personne non "
        "autorisée (chiffrées), des mesures ultérieures rendent le risque élevé improbable, ou "
        "informer chaque personne exigerait des efforts disproportionnés (une communication "
        "publique est alors faite).",
        "informed_anyway": "Personnes concernées informées malgré tout",
        "phases": "Notification échelonnée et registre",
        "phases_text": "Si certaines informations ne sont pas encore disponibles, notifiez ce qui "
        "est connu et communiquez le reste de manière échelonnée, sans autre retard indu "
        "(art. 33.4).",
        "register": "Consignez la violation, ses effets et les mesures prises dans le registre "
        "des violations du cabinet, qu'elle soit notifiée ou non (art. 33.5).",
        "need_controller": "le nom et le numéro d'entreprise du responsable du traitement",
        "need_contact": "le nom et les coordonnées du délégué à la protection des données ou "
        "d'un autre point de contact",
        "need_people": "le nombre approximatif de personnes concernées",
        "need_records": "le nombre approximatif d'enregistrements concernés",
        "need_data_categories": "les catégories de données à caractère personnel concernées",
        "need_people_categories": "les catégories de personnes concernées",
        "need_started": "la date de la violation ou de son début, si elle est connue",
        "need_aware": "la date à laquelle le cabinet a pris connaissance de la violation",
        "need_delay": "les motifs du retard",
        "need_nature": "la nature de la violation",
        "need_consequences": "les conséquences probables de la violation",
        "need_taken": "les mesures prises",
        "need_proposed": "les mesures proposées pour remédier à la violation et en atténuer "
        "les conséquences",
        "need_informed": "combien de personnes concernées ont été informées, quand et comment",
        "need_inform": "quand et comment les personnes concernées sont informées",
    },
    "nl": {
        "title": "Melding van een inbreuk in verband met persoonsgegevens — ontwerp voor "
        "{authority}",
        "intro": "Ontwerp opgesteld door Tocsin voor incident {incident}. Het volgt artikel "
        "33.3 AVG: kopieer elke sectie naar het overeenkomstige veld van het formulier van de "
        "autoriteit (de precieze velden van het formulier zijn hier niet nagekeken, en het kan "
        "meer vragen). Er is niets naar de autoriteit verstuurd.",
        "submit": "Hoe indienen",
        "form_apd": "Met het elektronische PDF-formulier van het e-formulierenportaal van de "
        "GBA, ingevuld in het Nederlands of het Frans. Per e-mail verstuurde formulieren worden "
        "niet behandeld.",
        "form_cnil": "Via de online teledienst van de CNIL voor meldingen van inbreuken in "
        "verband met persoonsgegevens, in het Frans.",
        "language_note": "Dit ontwerp is in het Nederlands; de autoriteit ontvangt de melding "
        "in het {languages}.",
        "translate": "het ontwerp vertaald in het {languages}",
        "to_complete": "Aan te vullen vóór het indienen",
        "nothing_to_complete": "Niets is gemarkeerd als aan te vullen; lees elke sectie na vóór "
        "het indienen.",
        "marker": "AAN TE VULLEN",
        "controller": "Verwerkingsverantwoordelijke",
        "controller_name": "Naam en ondernemingsnummer",
        "reference": "Interne referentie",
        "dates": "Data en termijn (art. 33.1)",
        "aware": "Het kantoor heeft kennis gekregen van de inbreuk op",
        "started": "De inbreuk vond plaats of begon op",
        "deadline": "Termijn voor de melding (72 uur na de kennisname)",
        "status": "Status",
        "in_time": "binnen de termijn",
        "late": "de termijn is verstreken: geef de redenen voor de vertraging (hieronder)",
        "delay": "Redenen voor de vertraging (art. 33.1)",
        "a": "a) Aard van de inbreuk",
        "data_categories": "Categorieën van betrokken persoonsgegevens",
        "people_categories": "Categorieën van betrokkenen",
        "people_count": "Geschat aantal betrokkenen",
        "records_count": "Geschat aantal betrokken registraties van persoonsgegevens",
        "b": "b) Functionaris voor gegevensbescherming of ander contactpunt",
        "c": "c) Waarschijnlijke gevolgen",
        "d": "d) Genomen of voorgestelde maatregelen",
        "taken": "Genomen maatregelen (vastgelegd door deze uitvoering)",
        "titles_note": "Titels van de stappen zoals het draaiboek ze noemt; vertaal ze zo nodig.",
        "by": "door {who}",
        "proposed": "Voorgestelde maatregelen, ook om de eventuele nadelige gevolgen te beperken",
        "art34": "Mededeling aan de betrokkenen (art. 34)",
        "high_risk": "Het risico voor de rechten en vrijheden van de betrokkenen wordt als hoog "
        "ingeschat: artikel 34 vereist dat zij onverwijld worden ingelicht, in duidelijke en "
        "eenvoudige taal, met het contactpunt (b), de waarschijnlijke gevolgen (c) en de "
        "maatregelen (d).",
        "informed": "Tot nu toe ingelichte betrokkenen",
        "message": "Wat de betrokkenen te horen krijgen (duidelijke taal)",
        "msg_what": "Wat er gebeurd is: {text}",
        "msg_risk": "Wat dit voor u kan betekenen: {text}",
        "msg_done": "Wat wij gedaan hebben: {text}",
        "msg_advice": "Wat wij verder doen: {text}",
        "msg_contact": "Bij wie u met vragen terechtkunt: {text}",
        "low_risk": "Het risico wordt niet als hoog ingeschat: artikel 34 vereist niet dat de "
        "betrokkenen worden ingelicht. Wordt het hoog, dan moeten zij worden ingelicht, tenzij "
        "een uitzondering van artikel 34.3 geldt: de gegevens waren onbegrijpelijk voor "
        "onbevoegden (versleuteld), latere maatregelen maken het hoge risico onwaarschijnlijk, "
        "of elke betrokkene inlichten zou onevenredige inspanningen vergen (dan volgt een "
        "openbare mededeling).",
        "informed_anyway": "Toch ingelichte betrokkenen",
        "phases": "Gefaseerde melding en register",
        "phases_text": "Is een deel van deze informatie nog niet beschikbaar, meld dan wat "
        "bekend is en verstrek de rest gefaseerd, zonder onredelijke verdere vertraging "
        "(art. 33.4).",
        "register": "Leg de inbreuk, de gevolgen en de genomen maatregelen vast in het "
        "inbreukregister van het kantoor, ook als ze niet gemeld wordt (art. 33.5).",
        "need_controller": "de naam en het ondernemingsnummer van de verwerkingsverantwoordelijke",
        "need_contact": "de naam en contactgegevens van de functionaris voor "
        "gegevensbescherming of een ander contactpunt",
        "need_people": "het geschatte aantal betrokkenen",
        "need_records": "het geschatte aantal betrokken registraties van persoonsgegevens",
        "need_data_categories": "de categorieën van betrokken persoonsgegevens",
        "need_people_categories": "de categorieën van betrokkenen",
        "need_started": "wanneer de inbreuk plaatsvond of begon, indien bekend",
        "need_aware": "wanneer het kantoor kennis kreeg van de inbreuk",
        "need_delay": "de redenen voor de vertraging",
        "need_nature": "de aard van de inbreuk",
        "need_consequences": "de waarschijnlijke gevolgen van de inbreuk",
        "need_taken": "de genomen maatregelen",
        "need_proposed": "de voorgestelde maatregelen om de inbreuk aan te pakken en de "
        "gevolgen te beperken",
        "need_informed": "hoeveel betrokkenen werden ingelicht, wanneer en hoe",
        "need_inform": "wanneer en hoe de betrokkenen worden ingelicht",
    },
}

AUTHORITY_NAMES: dict[str, dict[str, str]] = {
    "en": {
        "apd": "the Belgian Data Protection Authority (APD/GBA)",
        "cnil": "the CNIL (Commission nationale de l'informatique et des libertés)",
    },
    "fr": {
        "apd": "l'Autorité de protection des données (APD)",
        "cnil": "la Commission nationale de l'informatique et des libertés (CNIL)",
    },
    "nl": {
        "apd": "de Gegevensbeschermingsautoriteit (GBA)",
        "cnil": "de Commission nationale de l'informatique et des libertés (CNIL)",
    },
}
LANGUAGE_NAMES: dict[str, dict[str, str]] = {
    "en": {"fr": "French", "nl": "Dutch"},
    "fr": {"fr": "français", "nl": "néerlandais"},
    "nl": {"fr": "Frans", "nl": "Nederlands"},
}
